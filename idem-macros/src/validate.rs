//! Checking the parsed options against the function they annotate, and turning them into a
//! [`Plan`] for `expand`. Every problem becomes a `syn::Error` spanned at the user's token, with
//! a `help:` line; all of them are collected and reported together.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Expr, ItemFn, Lit, ReturnType, Type};

use crate::duration::duration_opt;
use crate::keys::{self, Receiver};
use crate::parse::{Args, Opt};

/// Where a key part comes from: the error it gets differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartKind {
    /// Named in `key = (...)`.
    Key,
    /// An argument, because `key = (...)` is omitted.
    Implicit,
    /// Named in `verify = (...)`.
    Verify,
    /// A type or const parameter of the fn (`type_name::<T>()`, or the const's value), after
    /// the user's parts: each instantiation of a generic fn is its own key space.
    Generic,
}

/// One key or payload part: the expression handed to the helper, by reference.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) kind: PartKind,
    /// An expression of type `&T` (T the part's type).
    pub(crate) expr: TokenStream,
    /// Where an error about it points.
    pub(crate) span: Span,
}

/// Everything `expand` needs, all checked.
#[derive(Debug)]
pub(crate) struct Plan {
    /// An expression of type `&'static str`: the operation name.
    pub(crate) op: TokenStream,
    /// The fn's name when the operation name is the default (`crate::fn`): `expand` then emits
    /// the crate-wide item that makes a second fn with the same default name a compile error.
    pub(crate) default_name: Option<syn::Ident>,
    pub(crate) version: u32,
    /// `key = parent`: keyed by the parent call and the position in it.
    pub(crate) by_position: bool,
    pub(crate) parts: Vec<Part>,
    pub(crate) ttl: Option<TokenStream>,
    pub(crate) lease: Option<TokenStream>,
    pub(crate) wait: Option<TokenStream>,
    /// `Some(true)` for `on_conflict = error`.
    pub(crate) on_conflict_error: Option<bool>,
    /// `None`: errors are not recorded; `Some(None)`: all are; `Some(Some(pred))`: those `pred`
    /// accepts.
    pub(crate) cache_errors: Option<Option<Expr>>,
    pub(crate) abort_on_lease_loss: bool,
    /// `stream`: the fn returns `Result<Streamed<C, E>, E>`.
    pub(crate) stream: bool,
    /// `tx = arg`: the step runs in the caller's transaction, argument `arg`, of this type
    /// (the body's closure takes it back under the same name and type).
    pub(crate) tx: Option<(syn::Ident, Type)>,
    pub(crate) store: Option<Expr>,
    pub(crate) heartbeat: Option<bool>,
    /// The path of `idem_runtime` in generated code (`crate = ...`, else `::idem_runtime`).
    pub(crate) krate: TokenStream,
    /// The full return type, to pin the body's output.
    pub(crate) ret: Type,
}

/// Checks `args` against `func`. Returns the plan, or every error found.
pub(crate) fn validate(mut args: Args, func: &ItemFn) -> Result<Plan, Vec<syn::Error>> {
    let mut errors = std::mem::take(&mut args.errors);
    let sig = &func.sig;
    signature_errors(sig, &mut errors);
    let inputs = keys::inputs(sig);
    let ret = return_type(sig).unwrap_or_else(|e| {
        errors.push(e);
        Type::Verbatim(TokenStream::new())
    });
    let (op, default_name) = operation_name(&args, sig, inputs.receiver.as_ref(), &mut errors);
    let version = match &args.version {
        Some(Opt { value, .. }) => version(value).unwrap_or_else(|e| {
            errors.push(e);
            1
        }),
        None => 1,
    };
    let mut parts = Vec::new();
    keys::check_tx(&args, &inputs, &mut errors);
    if let (Some(tx), Some(stream)) = (&args.tx, &args.stream) {
        errors.push(err(
            stream.span(),
            "`stream` and `tx = ...` cannot go together",
            &format!(
                "a step in the caller's transaction records one value when the transaction commits; a stream is read after the fn returns. Remove `stream`, or remove `tx = {}`",
                tx.value
            ),
        ));
    }
    let key_paths = keys::key_parts(&args, sig, &inputs, &mut parts, &mut errors);
    keys::generic_parts(sig, &mut parts);
    keys::verify_parts(&args, &inputs, &key_paths, &mut parts, &mut errors);
    let options = options(&args, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        op,
        default_name,
        version,
        by_position: args.key.as_ref().is_some_and(|k| k.value.parent.is_some()),
        parts,
        ttl: options.ttl,
        lease: options.lease,
        wait: options.wait,
        on_conflict_error: options.on_conflict_error,
        cache_errors: args.cache_errors.map(|c| c.value),
        abort_on_lease_loss: args.abort_on_lease_loss.is_some(),
        stream: args.stream.is_some(),
        tx: args.tx.map(|t| {
            let ty = sig
                .inputs
                .iter()
                .find_map(|input| match input {
                    syn::FnArg::Typed(a) => match &*a.pat {
                        syn::Pat::Ident(p) if p.ident == t.value => Some((*a.ty).clone()),
                        _ => None,
                    },
                    syn::FnArg::Receiver(_) => None,
                })
                .unwrap_or(Type::Verbatim(TokenStream::new()));
            (t.value, ty)
        }),
        store: args.store.map(|s| s.value),
        heartbeat: args.heartbeat.map(|h| h.value.value),
        krate: options.krate,
        ret,
    })
}

/// The path generated code starts from: `crate = ...`, else `::idem_runtime`.
pub(crate) fn krate(args: &Args) -> TokenStream {
    match &args.krate {
        Some(Opt { value, .. }) => value.to_token_stream(),
        None => quote!(::idem_runtime),
    }
}

/// The fn itself: `async`, not `const`, not `extern`, not variadic.
fn signature_errors(sig: &syn::Signature, errors: &mut Vec<syn::Error>) {
    if let Some(c) = &sig.constness {
        errors.push(err(
            c.span,
            "#[idempotent] cannot go on a `const fn`",
            "remove `const`: an idempotent call reads and writes a store at run time",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(err(
            abi.span(),
            "#[idempotent] cannot go on an `extern` fn",
            "remove the ABI, and call the idempotent `async fn` from a plain wrapper if foreign code needs one",
        ));
    }
    if sig.asyncness.is_none() && sig.constness.is_none() && sig.abi.is_none() {
        errors.push(err(
            sig.fn_token.span,
            "#[idempotent] needs an `async fn`",
            "make it `async fn`: the call awaits the store before and after the body runs",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(err(
            v.span(),
            "#[idempotent] cannot go on a variadic fn",
            "take the values as a slice instead",
        ));
    }
}

/// The operation name (`name = "..."`, else the crate's name and the fn's), and the fn's name
/// when it is the default.
fn operation_name(
    args: &Args,
    sig: &syn::Signature,
    receiver: Option<&Receiver>,
    errors: &mut Vec<syn::Error>,
) -> (TokenStream, Option<syn::Ident>) {
    if let Some(Opt { value, .. }) = &args.name {
        let text = value.value();
        if text.trim().is_empty() || text.trim() != text {
            errors.push(err(
                value.span(),
                "the operation name must be non-empty, with no leading or trailing spaces",
                "write `name = \"orders::charge\"`: the name is part of every key, so pick one that lasts",
            ));
        }
        return (value.to_token_stream(), None);
    }
    if let Some(r) = receiver {
        errors.push(err(
            r.token.span,
            "a method annotated with #[idempotent] needs `name = \"...\"`",
            &format!(
                "the attribute cannot see the impl's type, so it cannot derive a unique name; pin one: `#[idempotent(name = \"Type::{}\", ...)]`",
                sig.ident
            ),
        ));
    }
    // The crate's name, not the module path: moving the fn between modules keeps its keys. Two
    // fns of one crate with the same name would then share a key space; `expand` makes that a
    // compile error (see `expand::default_name_guard`).
    let fn_name = sig.ident.unraw().to_string();
    (
        quote!(::core::concat!(::core::env!("CARGO_CRATE_NAME"), "::", #fn_name)),
        Some(sig.ident.clone()),
    )
}

/// The options that are not about the key.
struct Options {
    ttl: Option<TokenStream>,
    lease: Option<TokenStream>,
    wait: Option<TokenStream>,
    on_conflict_error: Option<bool>,
    krate: TokenStream,
}

/// Checks the durations, `on_conflict`, and `abort_on_lease_loss` against `heartbeat`.
fn options(args: &Args, errors: &mut Vec<syn::Error>) -> Options {
    let krate = krate(args);
    let ttl = duration_opt(&args.ttl, &krate, errors);
    let lease = duration_opt(&args.lease, &krate, errors);
    let wait = duration_opt(&args.wait, &krate, errors);
    let on_conflict_error = match &args.on_conflict {
        Some(Opt { value, .. }) => match value.to_string().as_str() {
            "wait" => Some(false),
            "error" => Some(true),
            other => {
                errors.push(err(
                    value.span(),
                    &format!("`on_conflict = {other}` is not an option"),
                    "write `on_conflict = wait` (the default: wait for the running attempt's outcome) or `on_conflict = error` (fail at once with `Error::InProgress`)",
                ));
                None
            }
        },
        None => None,
    };
    if let (Some(abort), Some(Opt { value, .. })) = (&args.abort_on_lease_loss, &args.heartbeat) {
        if !value.value {
            errors.push(err(
                abort.span(),
                "`abort_on_lease_loss` needs the heartbeat, and `heartbeat = false` turns it off",
                "without a heartbeat nothing notices that the lease was lost: remove `heartbeat = false`, or remove `abort_on_lease_loss`",
            ));
        }
    }
    Options {
        ttl,
        lease,
        wait,
        on_conflict_error,
        krate,
    }
}

/// An error with a `help:` line.
pub(crate) fn err(span: Span, message: &str, help: &str) -> syn::Error {
    syn::Error::new(span, format!("{message}\nhelp: {help}"))
}

/// The return type. Only a missing one (or `()`) is an error here: whether a written type is a
/// `Result` (an alias such as `io::Result<T>` or a local `type Res<T> = ...` included) is for the
/// compiler to decide, through the expansion's `Ret: ReturnsResult` bound, whose
/// `on_unimplemented` message says what to return.
fn return_type(sig: &syn::Signature) -> syn::Result<Type> {
    let help = "return `Result<T, E>` with `T: Serialize + Deserialize` (the recorded value) and `E: From<idem_runtime::Error> + Display` (idem's own errors reach the caller through it)";
    let message = "an #[idempotent] fn must return `Result<T, E>`, and this one returns `()`";
    match &sig.output {
        ReturnType::Default => Err(err(sig.paren_token.span.close(), message, help)),
        ReturnType::Type(_, ty) => {
            let mut inner: &Type = ty;
            while let Type::Group(g) = inner {
                inner = &g.elem;
            }
            while let Type::Paren(p) = inner {
                inner = &p.elem;
            }
            match inner {
                Type::Tuple(t) if t.elems.is_empty() => Err(err(ty.span(), message, help)),
                _ => Ok((**ty).clone()),
            }
        }
    }
}

fn version(value: &Expr) -> syn::Result<u32> {
    let help = "write `version = 2` (an integer from 1, the default, to 4294967295): a new version starts a fresh key space";
    let Expr::Lit(syn::ExprLit {
        lit: Lit::Int(lit), ..
    }) = value
    else {
        return Err(err(
            value.span(),
            "`version` must be an integer literal",
            help,
        ));
    };
    if !matches!(lit.suffix(), "" | "u32") {
        return Err(err(
            lit.span(),
            &format!("`version` is a `u32`, not `{}`", lit.suffix()),
            help,
        ));
    }
    match lit.base10_parse::<u32>() {
        Ok(0) => Err(err(
            lit.span(),
            "`version = 0` is not allowed: versions start at 1, the default",
            "leave `version` out for the original key space, or write `version = 2` to start a fresh one",
        )),
        Ok(v) => Ok(v),
        Err(_) => Err(err(lit.span(), "`version` does not fit in a `u32`", help)),
    }
}
