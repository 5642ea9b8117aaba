//! Checking the parsed options against the function they annotate, and turning them into a
//! [`Plan`] for `expand`. Every problem becomes a `syn::Error` spanned at the user's token, with
//! a `help:` line; all of them are collected and reported together.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, GenericParam, ItemFn, Lit, Member, Pat, ReturnType, Type};

use crate::parse::{duration_span, Args, DurationArg, Opt};

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
    pub(crate) store: Option<Expr>,
    pub(crate) heartbeat: Option<bool>,
    /// The full return type, to pin the body's output.
    pub(crate) ret: Type,
}

/// One argument of the function.
struct Arg {
    name: syn::Ident,
    /// Its type is `&mut T`.
    by_mut: bool,
    /// Its type is `&T` (not `&mut`): the argument itself is already a reference to the part.
    by_ref: bool,
}

/// The function's receiver, if it has one.
struct Receiver {
    token: syn::Token![self],
    by_ref: bool,
}

/// Checks `args` against `func`. Returns the plan, or every error found.
pub(crate) fn validate(args: Args, func: &ItemFn) -> Result<Plan, Vec<syn::Error>> {
    let mut errors = args.errors;
    let sig = &func.sig;

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

    // Arguments and receiver.
    let mut receiver = None;
    let mut fn_args = Vec::new();
    let mut pattern_args = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                receiver = Some(Receiver {
                    token: r.self_token,
                    by_ref: matches!(*r.ty, Type::Reference(_)),
                });
            }
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(p) if p.subpat.is_none() => fn_args.push(Arg {
                    name: p.ident.clone(),
                    by_mut: matches!(&*t.ty, Type::Reference(r) if r.mutability.is_some()),
                    by_ref: matches!(&*t.ty, Type::Reference(r) if r.mutability.is_none()),
                }),
                other => pattern_args.push(other.clone()),
            },
        }
    }

    // Return type.
    let ret = match return_type(sig) {
        Ok(r) => r,
        Err(e) => {
            errors.push(e);
            Type::Verbatim(TokenStream::new())
        }
    };

    // Operation name.
    let mut default_name = None;
    let op = match &args.name {
        Some(Opt { value, .. }) => {
            let text = value.value();
            if text.trim().is_empty() || text.trim() != text {
                errors.push(err(
                    value.span(),
                    "the operation name must be non-empty, with no leading or trailing spaces",
                    "write `name = \"orders::charge\"`: the name is part of every key, so pick one that lasts",
                ));
            }
            value.to_token_stream()
        }
        None => {
            if let Some(r) = &receiver {
                errors.push(err(
                    r.token.span,
                    "a method annotated with #[idempotent] needs `name = \"...\"`",
                    &format!(
                        "the attribute cannot see the impl's type, so it cannot derive a unique name; pin one: `#[idempotent(name = \"Type::{}\", ...)]`",
                        sig.ident
                    ),
                ));
            }
            // The crate's name, not the module path: moving the fn between modules keeps its
            // keys. Two fns of one crate with the same name would then share a key space;
            // `expand` makes that a compile error (see `expand::default_name_guard`).
            let fn_name = sig.ident.unraw().to_string();
            default_name = Some(sig.ident.clone());
            quote!(::core::concat!(::core::env!("CARGO_CRATE_NAME"), "::", #fn_name))
        }
    };

    // Version.
    let version = match &args.version {
        Some(Opt { value, .. }) => match version(value) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                1
            }
        },
        None => 1,
    };

    // Key and verify parts.
    let mut parts = Vec::new();
    let mut key_paths = Vec::new();
    if let (Some(once), Some(key)) = (&args.once, &args.key) {
        errors.push(err(
            once.span(),
            "`once` and `key = (...)` cannot go together",
            &format!(
                "`once` means one outcome for every call, whatever the arguments, and `{}` lists the arguments that tell calls apart: keep `key = (...)` and remove `once`, or keep `once` and remove `key = (...)`",
                key.name
            ),
        ));
    }
    match &args.key {
        Some(Opt { value, .. }) if value.entries.is_empty() && !sig.inputs.is_empty() => {
            // The trap this rejects: `key = ()` made every call one key, so the second
            // customer was handed the first customer's recorded outcome.
            errors.push(err(
                value.span,
                "`key = ()` gives every call of this fn the same key, whatever its arguments",
                &format!(
                    "list the arguments that identify a call, e.g. `key = ({})`; if one outcome for every call is really meant, write `#[idempotent(once)]` instead of `key = ()`",
                    example_key(&fn_args, receiver.as_ref())
                ),
            ));
        }
        Some(Opt { value, .. }) => {
            for entry in &value.entries {
                match entry_path(entry, &fn_args, receiver.as_ref()) {
                    Ok(path) => {
                        if key_paths.iter().any(|p: &Path| p.text == path.text) {
                            errors.push(err(
                                entry.span(),
                                &format!("`{}` is listed twice in `key = (...)`", path.text),
                                "list each key part once",
                            ));
                            continue;
                        }
                        parts.push(Part {
                            kind: PartKind::Key,
                            expr: path.expr.clone(),
                            span: entry.span(),
                        });
                        key_paths.push(path);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        None if args.once.is_some() => {}
        None => {
            if let Some(r) = &receiver {
                if fn_args.is_empty() && pattern_args.is_empty() {
                    // Without `key`, `self` is not part of the key, so every receiver would
                    // share one key: the `key = ()` trap without the `()`.
                    errors.push(err(
                        r.token.span,
                        "without `key = (...)` this method's key is empty: `self` is not part of the default key, so every receiver shares one outcome",
                        "key on the receiver: `key = (self)` (then `Self: IdemKey`) or a field of it, `key = (self.id)`; if one outcome for every call is really meant, write `once`",
                    ));
                }
            }
            for p in &pattern_args {
                errors.push(err(
                    p.span(),
                    "without `key = (...)` every argument is part of the key, and this one is a pattern, not a name",
                    "list the key arguments explicitly: `#[idempotent(key = (arg1, arg2))]`, or bind this argument to a name",
                ));
            }
            for a in &fn_args {
                let name = &a.name;
                let expr = if a.by_ref {
                    quote_spanned!(name.span()=> #name)
                } else {
                    quote_spanned!(name.span()=> &#name)
                };
                parts.push(Part {
                    kind: PartKind::Implicit,
                    expr,
                    span: name.span(),
                });
            }
        }
    }
    // Each instantiation of a generic fn is its own key space: `f::<u32>` and `f::<i32>` with
    // equal arguments are different calls (and may return different types). Lifetimes are
    // erased and `impl Trait` arguments are anonymous (usually clients), so neither is keyed.
    for param in &sig.generics.params {
        match param {
            GenericParam::Type(t) => {
                let ident = &t.ident;
                parts.push(Part {
                    kind: PartKind::Generic,
                    expr: quote_spanned!(ident.span()=> ::core::any::type_name::<#ident>()),
                    span: ident.span(),
                });
            }
            GenericParam::Const(c) => {
                let ident = &c.ident;
                parts.push(Part {
                    kind: PartKind::Generic,
                    expr: quote_spanned!(ident.span()=> &#ident),
                    span: ident.span(),
                });
            }
            GenericParam::Lifetime(_) => {}
        }
    }
    if let Some(Opt { value, .. }) = &args.verify {
        let mut verify_paths: Vec<Path> = Vec::new();
        for entry in &value.entries {
            match entry_path(entry, &fn_args, receiver.as_ref()) {
                Ok(path) => {
                    if verify_paths.iter().any(|p| p.text == path.text) {
                        errors.push(err(
                            entry.span(),
                            &format!("`{}` is listed twice in `verify = (...)`", path.text),
                            "list each payload part once",
                        ));
                        continue;
                    }
                    let in_key = key_paths.iter().find(|k| overlaps(k, &path));
                    let implicit = args.key.is_none() && args.once.is_none() && path.root != "self";
                    if let Some(k) = in_key {
                        errors.push(err(
                            entry.span(),
                            &format!(
                                "`{}` is in both `key = (...)` (as `{}`) and `verify = (...)`",
                                path.text, k.text
                            ),
                            "the key says which call this is and `verify` checks that its payload did not change: put each value in one of them only",
                        ));
                        continue;
                    }
                    if implicit {
                        errors.push(err(
                            entry.span(),
                            &format!(
                                "`{}` is in `verify = (...)`, but without `key = (...)` every argument is already part of the key",
                                path.text
                            ),
                            "list the key arguments explicitly (`key = (...)`) and leave the payload out of them",
                        ));
                        continue;
                    }
                    parts.push(Part {
                        kind: PartKind::Verify,
                        expr: path.expr.clone(),
                        span: entry.span(),
                    });
                    verify_paths.push(path);
                }
                Err(e) => errors.push(e),
            }
        }
    }

    // Options.
    let ttl = duration_opt(&args.ttl, &mut errors);
    let lease = duration_opt(&args.lease, &mut errors);
    let wait = duration_opt(&args.wait, &mut errors);
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

    if errors.is_empty() {
        Ok(Plan {
            op,
            default_name,
            version,
            parts,
            ttl,
            lease,
            wait,
            on_conflict_error,
            cache_errors: args.cache_errors.map(|c| c.value),
            abort_on_lease_loss: args.abort_on_lease_loss.is_some(),
            store: args.store.map(|s| s.value),
            heartbeat: args.heartbeat.map(|h| h.value.value),
            ret,
        })
    } else {
        Err(errors)
    }
}

/// The arguments to suggest for `key = (...)`: the named ones, else `self.id`.
fn example_key(args: &[Arg], receiver: Option<&Receiver>) -> String {
    let named: Vec<String> = args
        .iter()
        .filter(|a| !a.by_mut)
        .map(|a| a.name.unraw().to_string())
        .collect();
    if !named.is_empty() {
        named.join(", ")
    } else if receiver.is_some() {
        "self.id".to_owned()
    } else {
        "arg, ...".to_owned()
    }
}

/// An error with a `help:` line.
pub(crate) fn err(span: Span, message: &str, help: &str) -> syn::Error {
    syn::Error::new(span, format!("{message}\nhelp: {help}"))
}

/// The return type, checked to be `Result<T, E>`-like: a path ending in `Result` with at most
/// two type arguments (an alias such as `io::Result<T>` fixes `E` itself; `T` and `E` are then
/// inferred from the pinned body output, and their bounds still checked).
fn return_type(sig: &syn::Signature) -> syn::Result<Type> {
    let help = "return `Result<T, E>` with `T: Serialize + Deserialize` (the recorded value) and `E: From<idem_runtime::Error> + Display` (idem's own errors reach the caller through it)";
    let ty = match &sig.output {
        ReturnType::Type(_, ty) => ty,
        ReturnType::Default => {
            return Err(err(
                sig.paren_token.span.close(),
                "an #[idempotent] fn must return `Result<T, E>`, and this one returns `()`",
                help,
            ))
        }
    };
    let mut inner: &Type = ty;
    while let Type::Group(g) = inner {
        inner = &g.elem;
    }
    if let Type::Paren(p) = inner {
        inner = &p.elem;
    }
    let not_result = || {
        err(
            ty.span(),
            &format!(
                "an #[idempotent] fn must return `Result<T, E>`, not `{}`",
                ty.to_token_stream()
                    .to_string()
                    .replace(" < ", "<")
                    .replace(" >", ">")
                    .replace(" ,", ",")
            ),
            help,
        )
    };
    let Type::Path(path) = inner else {
        return Err(not_result());
    };
    if path.qself.is_some() {
        return Err(not_result());
    }
    let Some(last) = path.path.segments.last() else {
        return Err(not_result());
    };
    if last.ident != "Result" {
        return Err(not_result());
    }
    let types: Vec<&Type> = match &last.arguments {
        syn::PathArguments::None => Vec::new(),
        syn::PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        syn::PathArguments::Parenthesized(_) => return Err(not_result()),
    };
    if types.len() > 2 {
        return Err(not_result());
    }
    Ok((**ty).clone())
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

/// A checked key entry: `arg`, `arg.field`, `self`, `self.field.0`.
struct Path {
    root: String,
    /// Dotted text, for messages and overlap checks.
    text: String,
    /// An expression of type `&T`.
    expr: TokenStream,
}

/// One path is the other or a prefix of it: `req` and `req.id` overlap, `req.id` and `req.body`
/// do not.
fn overlaps(a: &Path, b: &Path) -> bool {
    let (short, long) = if a.text.len() <= b.text.len() {
        (&a.text, &b.text)
    } else {
        (&b.text, &a.text)
    };
    long == short || long.starts_with(&format!("{short}."))
}

fn entry_path(entry: &Expr, args: &[Arg], receiver: Option<&Receiver>) -> syn::Result<Path> {
    let mut members: Vec<&Member> = Vec::new();
    let mut cur = entry;
    loop {
        match cur {
            Expr::Field(f) => {
                members.push(&f.member);
                cur = &f.base;
            }
            Expr::Group(g) => cur = &g.expr,
            _ => break,
        }
    }
    members.reverse();
    let root = match cur {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => p.path.get_ident(),
        _ => None,
    };
    let Some(root) = root else {
        return Err(err(
            entry.span(),
            "a key entry names an argument or a field of one",
            "write `key = (arg, arg.field, ...)`; to key on a computed value, compute it in the caller and pass it as an argument",
        ));
    };
    let mut text = root.to_string();
    for m in &members {
        text.push('.');
        match m {
            Member::Named(i) => text.push_str(&i.to_string()),
            Member::Unnamed(i) => text.push_str(&i.index.to_string()),
        }
    }
    let span = entry.span();
    let root_text = root.to_string();
    if root_text == "self" {
        let Some(r) = receiver else {
            return Err(err(
                root.span(),
                "`self` is in the key, but this fn has no `self` receiver",
                "name one of its arguments instead",
            ));
        };
        let expr = if !members.is_empty() {
            quote_spanned!(span=> &#entry)
        } else if r.by_ref {
            quote_spanned!(span=> &*#entry)
        } else {
            quote_spanned!(span=> &#entry)
        };
        return Ok(Path {
            root: root_text,
            text,
            expr,
        });
    }
    let Some(arg) = args.iter().find(|a| a.name == *root) else {
        let names: Vec<String> = args.iter().map(|a| a.name.to_string()).collect();
        let mut help = match closest(&root_text, &names) {
            Some(best) => format!("did you mean `{best}`?"),
            None => String::new(),
        };
        let list = if names.is_empty() {
            "this fn has no named arguments".to_owned()
        } else {
            format!(
                "the arguments are: {}",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if help.is_empty() {
            help = list;
        } else {
            help = format!("{help} ({list})");
        }
        return Err(err(
            root.span(),
            &format!("`{root_text}` is not an argument of this fn"),
            &help,
        ));
    };
    if members.is_empty() && arg.by_mut {
        return Err(err(
            root.span(),
            &format!("`{root_text}` is a `&mut` reference, which cannot be part of an idempotency key"),
            &format!("a `&mut` argument is a handle the body changes, not a value that identifies the call: remove `{root_text}` from the list, or key on a field of the value it points to (`{root_text}.id`)"),
        ));
    }
    let expr = if members.is_empty() && arg.by_ref {
        quote_spanned!(span=> #entry)
    } else {
        quote_spanned!(span=> &#entry)
    };
    Ok(Path {
        root: root_text,
        text,
        expr,
    })
}

/// The name closest to `word`, if one is close enough to be a typo of it.
fn closest<'a>(word: &str, names: &'a [String]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (edit_distance(word, n), n))
        .filter(|(d, n)| *d <= (n.chars().count().max(word.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    // Optimal string alignment: insertions, deletions, substitutions and adjacent swaps.
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0_usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

fn duration_opt(
    opt: &Option<Opt<DurationArg>>,
    errors: &mut Vec<syn::Error>,
) -> Option<TokenStream> {
    let Opt { name, value } = opt.as_ref()?;
    match value {
        DurationArg::Literal(lit) => match parse_duration(&lit.value()) {
            Ok(0) if name != "wait" => {
                errors.push(err(
                    lit.span(),
                    &format!("`{name}` cannot be zero"),
                    &format!("give a positive duration, e.g. `{name} = \"30s\"`"),
                ));
                None
            }
            Ok(nanos) => {
                let secs = u64::try_from(nanos / 1_000_000_000);
                let sub = (nanos % 1_000_000_000) as u32;
                match secs {
                    Ok(secs) => {
                        Some(quote_spanned!(lit.span()=> ::core::time::Duration::new(#secs, #sub)))
                    }
                    Err(_) => {
                        errors.push(err(
                            lit.span(),
                            "this duration is too long",
                            "use at most a few centuries",
                        ));
                        None
                    }
                }
            }
            Err(reason) => {
                errors.push(err(
                    lit.span(),
                    &format!("`{}` is not a duration: {reason}", lit.value()),
                    "write a number and a unit, units largest first: \"24h\", \"30s\", \"500ms\", \"1h30m\" (units: d, h, m, s, ms, us, ns); or any expression of type `std::time::Duration`",
                ));
                None
            }
        },
        DurationArg::Expr(e) => {
            if let Expr::Lit(syn::ExprLit {
                lit: Lit::Int(_) | Lit::Float(_),
                ..
            }) = &**e
            {
                errors.push(err(
                    duration_span(value),
                    &format!("`{name}` needs a unit: a bare number is ambiguous"),
                    &format!(
                        "write it as a string with a unit, e.g. `{name} = \"{}s\"`, or as a `Duration` (`Duration::from_secs(...)`)",
                        e.to_token_stream()
                    ),
                ));
                return None;
            }
            Some(quote_spanned!(e.span()=> ::idem_runtime::__private::duration(#e)))
        }
    }
}

/// Parses `"1h30m"`, `"500ms"`, `"2d"`: number-unit pairs, units strictly decreasing. Returns
/// nanoseconds.
pub(crate) fn parse_duration(text: &str) -> Result<u128, String> {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("ms", 1_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let rank = |unit: &str| match unit {
        "d" => 0,
        "h" => 1,
        "m" => 2,
        "s" => 3,
        "ms" => 4,
        "us" => 5,
        _ => 6,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err("it is empty".into());
    }
    let mut rest = s;
    let mut total: u128 = 0;
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| "the number is too large".to_owned())?;
        rest = &rest[digits..];
        let Some((unit, scale)) = UNITS.iter().find(|(u, _)| {
            rest.starts_with(u)
                && !rest[u.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
        }) else {
            let found: String = rest.chars().take_while(|c| !c.is_ascii_digit()).collect();
            return Err(if found.is_empty() {
                format!("`{n}` has no unit")
            } else {
                format!("`{found}` is not a unit")
            });
        };
        let r = rank(unit);
        if last_rank.is_some_and(|l| r <= l) {
            return Err("units must go from largest to smallest, each once".into());
        }
        last_rank = Some(r);
        total = n
            .checked_mul(*scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "it is too long".to_owned())?;
        rest = &rest[unit.len()..];
    }
    Ok(total)
}
