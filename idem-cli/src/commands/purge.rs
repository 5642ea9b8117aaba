//! `idem purge`: delete expired records in batches.

use std::sync::Arc;
use std::time::Duration;

use idem_runtime::store::Store;
use idem_runtime::Idem;
use serde_json::json;

use crate::failure::Failure;
use crate::stdout::say;

pub(crate) async fn run(
    store: Arc<dyn Store>,
    batch: u32,
    abandoned_after: Duration,
    json: bool,
) -> Result<(), Failure> {
    let idem = Idem::builder(store).cache_capacity(0).build();
    let n = idem
        .purge_expired(batch, abandoned_after)
        .await
        .map_err(|e| Failure::store(&e))?;
    if json {
        say!("{}", json!({ "purged": n }));
    } else {
        say!("purged {n} expired record(s)");
    }
    Ok(())
}
