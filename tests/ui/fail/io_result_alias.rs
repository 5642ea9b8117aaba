use idem_runtime::idempotent;

#[idempotent(key = (path))]
async fn read(path: &str) -> std::io::Result<String> {
    Ok(path.to_owned())
}

fn main() {}
