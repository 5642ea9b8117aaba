use idem_runtime::idempotent;

#[derive(Debug)]
pub struct PipelineError;

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pipeline failed")
    }
}

#[idempotent(key = (id))]
async fn step(id: u64) -> Result<u64, PipelineError> {
    Ok(id)
}

fn main() {}
