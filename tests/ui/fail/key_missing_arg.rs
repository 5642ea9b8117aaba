use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (titel, lang))]
async fn generate(title: &str, lang: &str) -> Result<String, AppError> {
    Ok(format!("{title} {lang}"))
}

fn main() {}
