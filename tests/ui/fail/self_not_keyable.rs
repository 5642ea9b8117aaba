use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

pub struct Worker {
    pub id: u64,
}

impl Worker {
    #[idempotent(name = "Worker::run", key = (self, job))]
    async fn run(&self, job: u64) -> Result<u64, AppError> {
        Ok(self.id + job)
    }
}

fn main() {}
