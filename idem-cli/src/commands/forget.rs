//! `idem forget KEY`: delete a record and its attempts log, so the next call runs the body again.

use std::sync::Arc;

use idem_runtime::store::Store;
use idem_runtime::{Error, Idem};
use serde_json::json;

use crate::failure::{error_text, Failure};
use crate::stdout::say;
use crate::store::find;

pub(crate) async fn run(
    store: Arc<dyn Store>,
    key: &str,
    force: bool,
    json: bool,
) -> Result<(), Failure> {
    let record = find(&*store, key).await?;
    let idem = Idem::builder(store).cache_capacity(0).build();
    let forgotten = if force {
        idem.force_forget(&record.key).await
    } else {
        idem.forget(&record.key).await
    };
    let existed = match forgotten {
        Ok(existed) => existed,
        Err(e @ Error::Running { .. }) => return Err(Failure::lease_live(error_text(&e))),
        Err(e) => return Err(Failure::store(&e)),
    };
    if !existed {
        return Err(Failure::not_found(format!(
            "no record for key {}",
            record.key
        )));
    }
    if json {
        say!(
            "{}",
            json!({ "forgotten": record.key.to_hex(), "op": record.op })
        );
    } else {
        say!(
            "forgot {} (op {}): the next call runs the body again",
            record.key,
            record.op
        );
    }
    Ok(())
}
