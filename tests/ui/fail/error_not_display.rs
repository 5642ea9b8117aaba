use idem_runtime::idempotent;

pub struct PipelineError;

impl From<idem_runtime::Error> for PipelineError {
    fn from(_: idem_runtime::Error) -> Self {
        PipelineError
    }
}

#[idempotent(key = (id))]
async fn step(id: u64) -> Result<u64, PipelineError> {
    Ok(id)
}

fn main() {}
