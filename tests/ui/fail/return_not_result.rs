use idem_runtime::idempotent;

#[idempotent(key = (id))]
async fn lookup(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
