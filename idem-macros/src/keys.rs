//! The key and payload parts of an `#[idempotent]` fn: its arguments as `validate` sees them,
//! the entries of `key = (...)` and `verify = (...)` checked against them, the default key, and
//! the type and const parameters that make each instantiation its own key space.

use proc_macro2::{TokenStream, TokenTree};
use quote::{quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, GenericParam, Member, Pat, Type};

use crate::parse::{closest, Args, Opt};
use crate::validate::{err, Part, PartKind};

/// One named value of the function: an argument, or a name bound inside a pattern argument.
pub(crate) struct Arg {
    pub(crate) name: syn::Ident,
    /// Its type is `&mut T` (or it is bound `ref mut`).
    by_mut: bool,
    /// Its type is `&T` (not `&mut`): the argument itself is already a reference to the part.
    by_ref: bool,
    /// Bound inside a pattern argument (`(a, b): (u32, u32)`): it may be named in `key`, but it
    /// is not an argument of the default key.
    in_pattern: bool,
    /// It carries a `#[cfg(...)]`.
    cfg: bool,
    /// Its type names a type parameter of the fn or is an `impl Trait`.
    generic: bool,
}

/// The function's receiver, if it has one.
pub(crate) struct Receiver {
    pub(crate) token: syn::Token![self],
    by_ref: bool,
}

/// The receiver, the named arguments (and names bound in patterns), and the pattern arguments.
pub(crate) struct Inputs {
    pub(crate) receiver: Option<Receiver>,
    pub(crate) args: Vec<Arg>,
    pub(crate) patterns: Vec<Pat>,
}

/// Sorts the fn's inputs into the receiver, named arguments and pattern arguments.
pub(crate) fn inputs(sig: &syn::Signature) -> Inputs {
    let type_params: Vec<String> = sig
        .generics
        .type_params()
        .map(|t| t.ident.to_string())
        .collect();
    let mut out = Inputs {
        receiver: None,
        args: Vec::new(),
        patterns: Vec::new(),
    };
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                out.receiver = Some(Receiver {
                    token: r.self_token,
                    by_ref: matches!(*r.ty, Type::Reference(_)),
                });
            }
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(p) if p.subpat.is_none() => out.args.push(Arg {
                    name: p.ident.clone(),
                    by_mut: matches!(&*t.ty, Type::Reference(r) if r.mutability.is_some()),
                    by_ref: matches!(&*t.ty, Type::Reference(r) if r.mutability.is_none()),
                    in_pattern: false,
                    cfg: t.attrs.iter().any(|a| a.path().is_ident("cfg")),
                    generic: is_generic(t.ty.to_token_stream(), &type_params),
                }),
                other => {
                    bound_names(other, &mut out.args);
                    out.patterns.push(other.clone());
                }
            },
        }
    }
    out
}

/// The type's tokens contain `impl` or a type parameter's name.
fn is_generic(ty: TokenStream, type_params: &[String]) -> bool {
    ty.into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "impl" || type_params.iter().any(|p| i == p),
        TokenTree::Group(g) => is_generic(g.stream(), type_params),
        _ => false,
    })
}

/// The names a pattern argument binds (`a` and `b` in `(a, Point { y: b, .. })`).
fn bound_names(pat: &Pat, out: &mut Vec<Arg>) {
    match pat {
        Pat::Ident(p) => {
            out.push(Arg {
                name: p.ident.clone(),
                by_mut: p.by_ref.is_some() && p.mutability.is_some(),
                by_ref: false,
                in_pattern: true,
                cfg: false,
                generic: false,
            });
            if let Some((_, sub)) = &p.subpat {
                bound_names(sub, out);
            }
        }
        Pat::Tuple(t) => t.elems.iter().for_each(|p| bound_names(p, out)),
        Pat::TupleStruct(t) => t.elems.iter().for_each(|p| bound_names(p, out)),
        Pat::Struct(s) => s.fields.iter().for_each(|f| bound_names(&f.pat, out)),
        Pat::Reference(r) => bound_names(&r.pat, out),
        Pat::Paren(p) => bound_names(&p.pat, out),
        Pat::Slice(s) => s.elems.iter().for_each(|p| bound_names(p, out)),
        _ => {}
    }
}

/// The parts of `key = (...)`, or of the default key when it is omitted. Returns the checked
/// key entries, for `verify_parts`' overlap check.
pub(crate) fn key_parts(
    args: &Args,
    sig: &syn::Signature,
    inputs: &Inputs,
    parts: &mut Vec<Part>,
    errors: &mut Vec<syn::Error>,
) -> Vec<Path> {
    let mut key_paths: Vec<Path> = Vec::new();
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
        Some(Opt { value, .. }) if value.parent.is_some() => {
            if let Some(arg) = inputs.args.iter().find(|a| a.name == "parent") {
                errors.push(err(
                    arg.name.span(),
                    "`key = parent` keys this step by its parent call and its position there, but this fn also has an argument named `parent`",
                    "to key by the argument, write `key = (parent,)`; to key by position, rename the argument",
                ));
            }
        }
        Some(Opt { value, .. }) if value.entries.is_empty() && !sig.inputs.is_empty() => {
            // The trap this rejects: `key = ()` made every call one key, so the second
            // customer was handed the first customer's recorded outcome.
            errors.push(err(
                value.span,
                "`key = ()` gives every call of this fn the same key, whatever its arguments",
                &format!(
                    "list the arguments that identify a call, e.g. `key = ({})`; if one outcome for every call is really meant, write `#[idempotent(once)]` instead of `key = ()`",
                    example_key(inputs)
                ),
            ));
        }
        Some(Opt { value, .. }) => {
            for entry in &value.entries {
                if let Some(tx) = args
                    .tx
                    .as_ref()
                    .filter(|tx| entry_root(entry) == Some(&tx.value))
                {
                    errors.push(err(
                        entry.span(),
                        &format!(
                            "`{}` is the step's transaction (`tx = {}`), and a transaction cannot be part of the key",
                            tx.value, tx.value
                        ),
                        "the key names what identifies the call (an order id, a message id): list those arguments, not the transaction",
                    ));
                    continue;
                }
                match entry_path(entry, inputs) {
                    Ok(path) if key_paths.iter().any(|p| p.text == path.text) => {
                        errors.push(err(
                            entry.span(),
                            &format!("`{}` is listed twice in `key = (...)`", path.text),
                            "list each key part once",
                        ));
                    }
                    Ok(path) => {
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
        None => default_key(inputs, args.tx.as_ref().map(|t| &t.value), parts, errors),
    }
    key_paths
}

/// Checks `tx = arg`: it names a `&mut` argument of the fn (the caller's transaction).
pub(crate) fn check_tx(args: &Args, inputs: &Inputs, errors: &mut Vec<syn::Error>) {
    let Some(tx) = &args.tx else { return };
    let name = &tx.value;
    match inputs.args.iter().find(|a| &a.name == name && !a.in_pattern) {
        Some(a) if a.by_mut => {}
        Some(_) => errors.push(err(
            name.span(),
            &format!("`tx = {name}` must name a `&mut` argument: the step writes through it"),
            &format!("take the transaction by `&mut`: `{name}: &mut sqlx::PgTransaction<'_>` (or `&mut sqlx::Transaction<'_, Sqlite>`, a `&mut PgConnection`, ...)"),
        )),
        None => errors.push(err(
            name.span(),
            &format!("`tx = {name}` names no argument of this fn"),
            &format!(
                "name the fn's transaction argument, e.g. `tx = tx` with an argument `tx: &mut sqlx::PgTransaction<'_>`{}",
                match inputs.args.iter().find(|a| a.by_mut) {
                    Some(a) => format!(" (did you mean `tx = {}`?)", a.name),
                    None => String::new(),
                }
            ),
        )),
    }
}

/// Without `key = (...)`: every argument except `self`, in order.
fn default_key(
    inputs: &Inputs,
    tx: Option<&syn::Ident>,
    parts: &mut Vec<Part>,
    errors: &mut Vec<syn::Error>,
) {
    // The step's transaction (`tx = ...`) is a handle, never part of the key.
    let named = || {
        inputs
            .args
            .iter()
            .filter(|a| !a.in_pattern && Some(&a.name) != tx)
    };
    if let Some(r) = &inputs.receiver {
        if inputs.args.is_empty() && inputs.patterns.is_empty() {
            // Without `key`, `self` is not part of the key, so every receiver would share one
            // key: the `key = ()` trap without the `()`.
            errors.push(err(
                r.token.span,
                "without `key = (...)` this method's key is empty: `self` is not part of the default key, so every receiver shares one outcome",
                "key on the receiver: `key = (self)` (then `Self: IdemKey`) or a field of it, `key = (self.id)`; if one outcome for every call is really meant, write `once`",
            ));
        }
    }
    for p in &inputs.patterns {
        errors.push(err(
            p.span(),
            "without `key = (...)` every argument is part of the key, and this one is a pattern, not a name",
            "list the key arguments explicitly: `#[idempotent(key = (arg1, arg2))]`, or bind this argument to a name",
        ));
    }
    for a in named() {
        let name = &a.name;
        if a.cfg {
            // The default key would name an argument that may be compiled out.
            errors.push(err(
                name.span(),
                &format!("`{name}` has a `#[cfg(...)]`, so the default key (every argument) is not the same in every build"),
                &format!(
                    "list the key explicitly, with the arguments that exist in every build: `#[idempotent(key = ({}))]`",
                    example_key(inputs)
                ),
            ));
            continue;
        }
        if a.by_mut {
            errors.push(err(
                name.span(),
                &format!("`{name}` is a `&mut` reference, and without `key = (...)` every argument is part of the key"),
                &format!(
                    "a `&mut` argument is a handle the body changes, not a value that identifies the call: list the key without it, `#[idempotent(key = ({}))]`",
                    example_key(inputs)
                ),
            ));
            continue;
        }
        let expr = if a.by_ref {
            quote_spanned!(name.span()=> #name)
        } else {
            quote_spanned!(name.span()=> &#name)
        };
        // A generic or `impl Trait` argument is bound by the public `IdemKey` (`key_part`), so
        // the compiler's "consider restricting" suggestion names a trait the user can write.
        let kind = if a.generic {
            PartKind::Key
        } else {
            PartKind::Implicit
        };
        parts.push(Part {
            kind,
            expr,
            span: name.span(),
        });
    }
}

/// Each instantiation of a generic fn is its own key space: `f::<u32>` and `f::<i32>` with
/// equal arguments are different calls (and may return different types). Lifetimes are erased
/// and `impl Trait` arguments are anonymous (usually clients), so neither is keyed.
pub(crate) fn generic_parts(sig: &syn::Signature, parts: &mut Vec<Part>) {
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
}

/// The parts of `verify = (...)`: none may overlap a key part.
pub(crate) fn verify_parts(
    args: &Args,
    inputs: &Inputs,
    key_paths: &[Path],
    parts: &mut Vec<Part>,
    errors: &mut Vec<syn::Error>,
) {
    let Some(Opt { value, .. }) = &args.verify else {
        return;
    };
    let mut verify_paths: Vec<Path> = Vec::new();
    for entry in &value.entries {
        let path = match entry_path(entry, inputs) {
            Ok(path) => path,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if verify_paths.iter().any(|p| p.text == path.text) {
            errors.push(err(
                entry.span(),
                &format!("`{}` is listed twice in `verify = (...)`", path.text),
                "list each payload part once",
            ));
            continue;
        }
        if let Some(k) = key_paths.iter().find(|k| overlaps(k, &path)) {
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
        if args.key.is_none() && args.once.is_none() && path.root != "self" {
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
}

/// The arguments to suggest for `key = (...)`: the named ones, else `self.id`.
pub(crate) fn example_key(inputs: &Inputs) -> String {
    let named: Vec<String> = inputs
        .args
        .iter()
        .filter(|a| !a.by_mut && !a.cfg)
        .map(|a| a.name.unraw().to_string())
        .collect();
    if !named.is_empty() {
        named.join(", ")
    } else if inputs.receiver.is_some() {
        "self.id".to_owned()
    } else {
        "arg, ...".to_owned()
    }
}

/// A checked key entry: `arg`, `arg.field`, `self`, `self.field.0`.
pub(crate) struct Path {
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

/// The argument a key entry starts from (`a` of `a.b.c`), if it is a plain path.
fn entry_root(entry: &Expr) -> Option<&syn::Ident> {
    match entry {
        Expr::Field(f) => entry_root(&f.base),
        Expr::Group(g) => entry_root(&g.expr),
        Expr::Path(p) if p.qself.is_none() => p.path.get_ident(),
        _ => None,
    }
}

fn entry_path(entry: &Expr, inputs: &Inputs) -> syn::Result<Path> {
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
        let Some(r) = &inputs.receiver else {
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
    let Some(arg) = inputs.args.iter().find(|a| a.name == *root) else {
        return Err(not_an_argument(root, inputs));
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

/// "`x` is not an argument", with the closest argument name if `x` looks like a typo of one.
fn not_an_argument(root: &syn::Ident, inputs: &Inputs) -> syn::Error {
    let root_text = root.to_string();
    let names: Vec<String> = inputs.args.iter().map(|a| a.name.to_string()).collect();
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
    let help = match closest(&root_text, &names) {
        Some(best) => format!("did you mean `{best}`? ({list})"),
        None => list,
    };
    err(
        root.span(),
        &format!("`{root_text}` is not an argument of this fn"),
        &help,
    )
}
