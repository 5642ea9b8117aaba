//! Where a call finds its store when the attribute names none: the enclosing [`Idem::scope`],
//! else the process-wide default ([`Idem::set_default`]).

use std::future::Future;
use std::sync::RwLock;

use crate::error::Error;
use crate::idem::Idem;

tokio::task_local! {
    static SCOPE: Idem;
}

static DEFAULT: RwLock<Option<Idem>> = RwLock::new(None);

impl Idem {
    /// Runs `fut` with this handle as the store of every idempotent call inside it that names no
    /// `store = ...` of its own. Like a task-local: a task spawned inside it does not inherit it.
    pub async fn scope<F: Future>(&self, fut: F) -> F::Output {
        SCOPE.scope(self.clone(), fut).await
    }

    /// Makes this handle the process-wide default store.
    pub fn set_default(&self) {
        set_default(Some(self.clone()));
    }

    /// Removes the process-wide default store.
    pub fn clear_default() {
        set_default(None);
    }
}

fn set_default(idem: Option<Idem>) {
    let mut slot = DEFAULT
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *slot = idem;
}

/// Finds the handle for a call: `explicit` (the attribute's `store = ...`), else the enclosing
/// [`Idem::scope`], else the process-wide default, else [`Error::NoStore`].
pub fn resolve(explicit: Option<&Idem>, op: &str) -> Result<Idem, Error> {
    if let Some(idem) = explicit {
        return Ok(idem.clone());
    }
    if let Ok(idem) = SCOPE.try_with(Clone::clone) {
        return Ok(idem);
    }
    let slot = DEFAULT
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.clone()
        .ok_or_else(|| Error::NoStore { op: op.to_owned() })
}
