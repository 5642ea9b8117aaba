use idem_runtime::idempotent;

#[idempotent(key = (id))]
async fn notify(id: u64) {
    let _ = id;
}

fn main() {}
