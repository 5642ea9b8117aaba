//! Procedural macros for idem; users reach them through `idem_runtime`
//! (`use idem_runtime::{idempotent, IdemKey};`).
//!
//! - [`macro@idempotent`] turns an `async fn` into an idempotent call: the function's signature,
//!   its callers and its body stay as they are.
//! - [`macro@IdemKey`] derives the canonical key encoding of a struct or enum.
//!
//! The crate is three passes, one file each: `parse` (the attribute's syntax), `validate` (the
//! options against the function, collecting every error), `expand` (the rewritten body). It never
//! depends on `idem-runtime`: generated code names only `::idem_runtime::__private::...`, and
//! goes through the same programmatic API (`Call`, `Idem::call`) a hand-written call uses, so a
//! macro call and a programmatic call with equal inputs derive the same key.
//!
//! # Decisions
//!
//! - **Key.** `key = (a, b.c, self)` names the key parts, in order. Without `key`, every
//!   argument except `self` is part of the key, in order; an unkeyable one (a pool, a client, a
//!   float) is then a compile error at that argument telling you to list `key = (...)`, and so
//!   is a `&mut` argument (a handle, not a value) or one with `#[cfg(...)]` (the key would differ
//!   between builds). `key` may name a value bound by a pattern argument (`(a, b): (u32, u32)`).
//! - **One key for every call is opt-in.** `key = ()` on a fn with any argument (`self`
//!   included) is an error: it silently handed every caller the first caller's outcome. `once`
//!   says it on purpose ("runs once, whatever the arguments") and cannot go with `key`. A
//!   method whose only argument is `self` needs `key` or `once` for the same reason. `key = ()`
//!   on a fn without arguments stays allowed: there is nothing to lose.
//! - **Name.** The operation name defaults to `concat!(env!("CARGO_CRATE_NAME"), "::", fn_name)`:
//!   moving the fn to another module keeps its keys (only renaming the fn or the crate changes
//!   them). The price is that two fns of one crate with the same name would share a key space,
//!   so the expansion of a default-named fn defines a hidden `#[macro_export]` macro named after
//!   the fn (`__idem_default_operation_name_<fn>__pin_one_with_name_eq`), and a second one is
//!   rustc's "defined multiple times" error at both fn names. `name = "..."` pins the name
//!   (recommended for production: then renaming the fn or the crate keeps the keys too). A
//!   method (a fn with a `self` receiver) must give `name`: an attribute cannot see its impl's
//!   type, so it cannot tell `A::run` from `B::run`.
//! - **Generics.** Each instantiation of a generic fn is its own key space: after the key parts,
//!   every type parameter adds `core::any::type_name::<T>()` and every const parameter its
//!   value. `type_name` is readable but not promised stable across compiler versions, and
//!   renaming or moving the type re-keys. Where that matters, annotate non-generic fns instead
//!   (one per type, or one that takes a tag saying which), with `name = "..."` and a key part of
//!   your own that names the type; or build the `Call` by hand.
//! - **Return type.** It must be `Result<T, E>` or any alias of it (`anyhow::Result<T>`,
//!   `io::Result<T>`, a local `type Res<T> = Result<T, MyError>`). The macro does not judge it by
//!   its name: the body returns `Ret` as written and the engine takes `T` and `E` from
//!   `<Ret as ReturnsResult>`, so the compiler decides, and a type that is not a `Result` gets
//!   that trait's message and nothing else; only a missing return type (`()`) is rejected by the
//!   macro itself. For an alias the error type is whatever the alias says; the macro does not
//!   need to name it, and
//!   the compiler still checks it (`io::Result<T>` fails: `io::Error` has no
//!   `From<idem_runtime::Error>`, and the error says to return `Result<T, CallError<io::Error>>`
//!   instead; `anyhow::Result<T>` works). `T: Serialize + DeserializeOwned`; `E: Display` and
//!   either `From<idem_runtime::Error>` or `E = idem_runtime::CallError<B>` (idem's errors then
//!   arrive as `CallError::Idem`, chosen by an inherent method of `ErrorType<CallError<B>>` that
//!   method resolution prefers to the trait method every other `E` gets); plus
//!   `Serialize + DeserializeOwned` for `E` with `cache_errors`.
//! - **`self` in the key** is allowed; `Self` must then be keyable (`#[derive(IdemKey)]`).
//! - **Versions** start at 1 (the default); `version = 0` is rejected, so it cannot be mistaken
//!   for the default.
//! - **Durations** (`ttl`, `lease`, `wait`) are either a string literal parsed at compile time
//!   by `humantime::parse_duration` (`"24h"`, `"30s"`, `"500ms"`, `"1h 30m"`, `"7days"`) or any
//!   expression of type `std::time::Duration`. A bare number is an error (which unit?).
//! - **Crate path.** Generated code names `::idem_runtime::__private::...`; a crate that renames
//!   the dependency (`idem = { package = "idem-runtime" }`) says so with `crate = idem`.
//! - **Diagnostics.** Misuse of the attribute is reported as spanned errors with a `help:` line,
//!   all at once, followed by the function unchanged, so nothing else fails. Trait bounds (an
//!   unkeyable part, an unserializable result, an error type without `From<Error>`) are checked
//!   once, by helpers whose bounds are marker traits with `#[diagnostic::on_unimplemented]`
//!   messages, at the user's own token.

mod derive;
mod duration;
mod expand;
mod keys;
mod parse;
mod validate;

use proc_macro::TokenStream;

/// Makes an `async fn` idempotent: it runs once per key; every retry, duplicate or second
/// worker with the same key gets the recorded result.
///
/// ```ignore
/// use idem_runtime::idempotent;
///
/// #[idempotent(key = (title, lang), ttl = "7d")]
/// async fn generate_draft(title: &str, lang: Lang, llm: &Llm) -> Result<Draft, PipelineError> {
///     llm.generate(title, lang).await // runs once per (title, lang)
/// }
/// ```
///
/// # Options
///
/// | option | meaning |
/// |---|---|
/// | `key = (arg, arg.field, self, ...)` | the key parts, in order. Default: every argument except `self`, in order; an unkeyable argument is then an error telling you to list `key`. `key = ()` is an error on a fn with arguments: write `once` |
/// | `once` | one outcome for every call, whatever the arguments (the key has no parts but the fn's type and const parameters). Not with `key` |
/// | `name = "..."` | the operation name. Default `concat!(env!("CARGO_CRATE_NAME"), "::", fn_name)`, which survives moving the fn between modules; two default-named fns of one crate with the same name are a compile error. Pin it (recommended in production) so renaming the fn or the crate keeps the keys too. **Required on methods** (fns with `self`): the attribute cannot see the impl's type; write `name = "Type::method"` |
/// | `version = N` | starts a fresh key space (`u32`, from 1, the default) |
/// | `verify = (arg, ...)` | payload fingerprint: the same key with a different payload is `Error::KeyReuse`. A value cannot be in both `key` and `verify` |
/// | `ttl = "24h"` | how long the outcome replays (default 24 h) |
/// | `lease = "30s"` | an attempt's lease (default 30 s) |
/// | `on_conflict = wait \| error` | another attempt is running: wait for it (default) or fail with `Error::InProgress` |
/// | `wait = "5m"` | the longest wait for another attempt (default 5 min) |
/// | `cache_errors` | record and replay `Err` values too (`E` must then be `Serialize + Deserialize`); errors carrying an `idem_runtime::Error` are never recorded |
/// | `cache_errors = path` | record and replay only the errors a `fn(&E) -> bool` accepts (`cache_errors = PayError::is_permanent`); the others are retried |
/// | `store = expr` | the store: an `Idem` or a reference to one, evaluated at each call (it may use the arguments: `store = self.idem`). Default: the enclosing `Idem::scope`, else the process default |
/// | `heartbeat = false` | do not renew the lease while the body runs |
/// | `abort_on_lease_loss` | drop the body the moment its attempt loses its lease, and return the new owner's outcome (or `Error::LeaseLost`); not with `heartbeat = false` |
/// | `stream` | the fn returns `Result<Streamed<C, E>, E>` (`idem_runtime::Streamed`, built with `Streamed::new(stream)`): the chunks are journaled as the caller reads them, replayed in order to later calls, and followed live by a call made while they are being generated (see `Idem::stream`) |
/// | `tx = arg` | a step in the caller's own sqlx transaction: `arg` is the fn's `&mut` transaction or connection (`&mut sqlx::PgTransaction<'_>`, `&mut sqlx::Transaction<'_, Sqlite>`, `&mut PgConnection`, ...); the claim, the body's writes through `arg` and the snapshot commit or roll back with it. `arg` is never part of the key. Not with `stream` |
/// | `crate = path` | the path of `idem_runtime` in the generated code, for a crate that renames the dependency: with `idem = { package = "idem-runtime", ... }` in Cargo.toml, write `crate = idem` (or serde's spelling, `crate = "idem"`). Default `::idem_runtime` |
///
/// Durations are a string literal parsed at compile time with `humantime::parse_duration`
/// (`"24h"`, `"30s"`, `"500ms"`, `"1h 30m"`, `"7days"`) or any expression of type
/// `std::time::Duration`.
///
/// # Requirements and decisions
///
/// - The fn is `async`, not `const`, not `extern`, and has a body (on a trait method, put the
///   attribute on the method of each `impl`).
/// - It returns `Result<T, E>` or an alias of it (`anyhow::Result<T>`, `io::Result<T>`,
///   `type Res<T> = Result<T, MyError>`), whose error type is whatever the alias says. `T: Serialize + DeserializeOwned` (the recorded snapshot);
///   `E: From<idem_runtime::Error> + Display` (idem's own errors, such as a store failure or a
///   reused key, reach the caller as `E`), or `E = idem_runtime::CallError<B>` for an error
///   type `B` that cannot have that impl (`std::io::Error`).
/// - Key parts implement `IdemKey`. `self` may be named in `key` (then `Self: IdemKey`); a
///   `&self` receiver is otherwise never part of the key.
/// - The body keeps its `?` and early `return`s; generics, lifetimes, `impl Trait` arguments
///   (not in the key), doc comments, inner attributes, `#[tracing::instrument]` and async fns in
///   trait impls all work.
/// - A generic fn's instantiations are separate key spaces: each type parameter adds
///   `core::any::type_name::<T>()`, each const parameter its value, after the key parts.
/// - Equal inputs give the key of the programmatic call
///   `Call::versioned(op, version).part(&a).part(&b)...` (then `.part(type_name::<T>())` for
///   each type parameter).
#[proc_macro_attribute]
pub fn idempotent(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let result = idempotent_impl(attr.into(), item.clone());
    match result {
        Ok(tokens) => tokens.into(),
        Err(errors) => {
            // The errors, then the function unchanged: nothing else fails because of us.
            let mut out = to_compile_errors(errors);
            out.extend(item);
            out.into()
        }
    }
}

fn idempotent_impl(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> Result<proc_macro2::TokenStream, Vec<syn::Error>> {
    let func: syn::ItemFn = syn::parse2(item.clone()).map_err(|e| vec![not_a_fn(e, item)])?;
    let args: parse::Args = syn::parse2(attr).map_err(|e| vec![e])?;
    let plan = validate::validate(args, &func)?;
    Ok(expand::expand(plan, func))
}

/// The error for an item that is not a fn with a body: a trait method declaration is named as
/// such, at its signature.
fn not_a_fn(parse_error: syn::Error, item: proc_macro2::TokenStream) -> syn::Error {
    match syn::parse2::<syn::TraitItemFn>(item) {
        Ok(method) if method.default.is_none() => validate::err(
            syn::spanned::Spanned::span(&method.sig),
            "#[idempotent] needs the fn's body, and this trait method declaration has none",
            "put #[idempotent] on the method in each `impl` of the trait, where its body is (or on a default body written here)",
        ),
        _ => validate::err(
            parse_error.span(),
            "#[idempotent] goes on an `async fn` with a body",
            "put it on a free `async fn`, or on an `async fn` in an `impl` block",
        ),
    }
}

/// Derives `IdemKey`: the canonical key encoding of a struct (its fields in order) or an enum
/// (its variant's tag, encoded as a `&str` key part, then the variant's fields). The tag is the
/// variant's name, or `#[idem(tag = "...")]` on the variant, so variants can be added, reordered
/// or (with a tag) renamed without re-keying the others; two variants with one tag are an error.
/// `#[idem(skip)]` on a field leaves it out. Type parameters get an `IdemKey` bound.
///
/// ```ignore
/// use idem_runtime::IdemKey;
///
/// #[derive(IdemKey)]
/// struct Request {
///     customer: u64,
///     sku: String,
///     #[idem(skip)]
///     received_at: std::time::Instant,
/// }
///
/// #[derive(IdemKey)]
/// enum Payment {
///     Card { last4: u16 },
///     #[idem(tag = "Transfer")] // renamed from `Transfer`: keeps its keys
///     BankTransfer { iban: String },
/// }
/// ```
#[proc_macro_derive(IdemKey, attributes(idem))]
pub fn derive_idem_key(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match derive::derive(input) {
        Ok(tokens) => tokens.into(),
        Err(errors) => to_compile_errors(errors).into(),
    }
}

fn to_compile_errors(errors: Vec<syn::Error>) -> proc_macro2::TokenStream {
    errors.into_iter().map(|e| e.to_compile_error()).collect()
}
