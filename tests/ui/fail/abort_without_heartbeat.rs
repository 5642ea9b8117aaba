use idem_runtime::idempotent;

#[idempotent(key = (id), heartbeat = false, abort_on_lease_loss)]
async fn job(id: u32) -> Result<u32, idem_runtime::Error> {
    Ok(id)
}

fn main() {}
