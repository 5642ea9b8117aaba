//! Parsing of the `#[idempotent(...)]` attribute's options: syntax only, nothing checked against
//! the function yet (that is `validate`). Errors that leave the rest parseable (an unknown or
//! duplicate option) are collected, so every one is reported at once.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Expr, Ident, LitBool, LitStr, Token};

/// The whole grammar, quoted by the unknown-option error.
pub(crate) const GRAMMAR: &str = "key = (arg, arg.field, ...) | parent, once, name = \"...\", version = N, \
     verify = (arg, ...), ttl = \"24h\" | <Duration>, lease = \"30s\" | <Duration>, \
     on_conflict = wait | error, wait = \"5m\" | <Duration>, cache_errors [= <fn(&E) -> bool>], \
     store = <expr>, heartbeat = false, abort_on_lease_loss, stream, tx = <&mut transaction argument>, \
     crate = path::to::idem_runtime";

/// Every option's name, for the "did you mean" of an unknown one.
const OPTIONS: [&str; 16] = [
    "key",
    "once",
    "name",
    "version",
    "verify",
    "ttl",
    "lease",
    "on_conflict",
    "wait",
    "cache_errors",
    "store",
    "heartbeat",
    "abort_on_lease_loss",
    "stream",
    "tx",
    "crate",
];

/// One parsed option value, with the option's name for spans and messages.
#[derive(Debug)]
pub(crate) struct Opt<T> {
    /// The option's name token.
    pub(crate) name: Ident,
    /// Its value.
    pub(crate) value: T,
}

/// A `ttl`/`lease`/`wait` value as written.
#[derive(Debug)]
pub(crate) enum DurationArg {
    /// A string literal such as `"1h30m"`, parsed at compile time by `validate`.
    Literal(LitStr),
    /// Any other expression; it must have type `std::time::Duration`.
    Expr(Box<Expr>),
}

/// A `key = (...)` or `verify = (...)` list, as written.
#[derive(Debug)]
pub(crate) struct List {
    /// The entries, as expressions (checked by `validate`).
    pub(crate) entries: Vec<Expr>,
    /// The whole value (`(a, b)`, `a` or `()`), for messages about the list itself.
    pub(crate) span: Span,
    /// Written as the bare word `parent` (`key = parent`): keyed by the parent call and the
    /// position in it, not by arguments (`entries` is then empty).
    pub(crate) parent: Option<Ident>,
}

/// The options, as written.
#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) key: Option<Opt<List>>,
    /// `once`: one outcome for every call, whatever the arguments (the explicit opt-in that
    /// `key = ()` on a fn with arguments is not).
    pub(crate) once: Option<Ident>,
    pub(crate) name: Option<Opt<LitStr>>,
    pub(crate) version: Option<Opt<Expr>>,
    pub(crate) verify: Option<Opt<List>>,
    pub(crate) ttl: Option<Opt<DurationArg>>,
    pub(crate) lease: Option<Opt<DurationArg>>,
    pub(crate) wait: Option<Opt<DurationArg>>,
    pub(crate) on_conflict: Option<Opt<Ident>>,
    /// `cache_errors` (every `Err`) or `cache_errors = pred` (the errors `pred` accepts).
    pub(crate) cache_errors: Option<Opt<Option<Expr>>>,
    /// `abort_on_lease_loss`: drop the body when its attempt loses its lease.
    pub(crate) abort_on_lease_loss: Option<Ident>,
    /// `stream`: the fn returns `Result<Streamed<C, E>, E>`, journaled and replayed chunk by chunk.
    pub(crate) stream: Option<Ident>,
    pub(crate) store: Option<Opt<Expr>>,
    /// `tx = arg`: the step runs in the caller's transaction, the `&mut` argument `arg`.
    pub(crate) tx: Option<Opt<Ident>>,
    pub(crate) heartbeat: Option<Opt<LitBool>>,
    /// `crate = path`: the path of `idem_runtime` when the dependency is renamed.
    pub(crate) krate: Option<Opt<syn::Path>>,
    /// Errors that did not stop parsing.
    pub(crate) errors: Vec<syn::Error>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let name: Ident = input.call(syn::ext::IdentExt::parse_any)?;
            args.option(&name, input)?;
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

impl Args {
    fn option(&mut self, name: &Ident, input: ParseStream<'_>) -> syn::Result<()> {
        let text = name.to_string();
        match text.as_str() {
            "key" => {
                let value = key_list(name, input)?;
                set(&mut self.key, name, value, &mut self.errors);
            }
            "verify" => {
                let value = key_list(name, input)?;
                set(&mut self.verify, name, value, &mut self.errors);
            }
            "name" => {
                eq(name, input, "name = \"Type::method\"")?;
                let value = input.parse::<LitStr>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`name` takes a string literal\nhelp: write `name = \"orders::charge\"`",
                    )
                })?;
                set(&mut self.name, name, value, &mut self.errors);
            }
            "version" => {
                eq(name, input, "version = 2")?;
                let value = input.parse::<Expr>()?;
                set(&mut self.version, name, value, &mut self.errors);
            }
            "ttl" | "lease" | "wait" => {
                let example = match text.as_str() {
                    "ttl" => "ttl = \"24h\"",
                    "lease" => "lease = \"30s\"",
                    _ => "wait = \"5m\"",
                };
                eq(name, input, example)?;
                let value = duration(input)?;
                let slot = match text.as_str() {
                    "ttl" => &mut self.ttl,
                    "lease" => &mut self.lease,
                    _ => &mut self.wait,
                };
                set(slot, name, value, &mut self.errors);
            }
            "on_conflict" => {
                eq(name, input, "on_conflict = wait")?;
                let value: Ident = input.call(syn::ext::IdentExt::parse_any).map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`on_conflict` is `wait` or `error`\nhelp: write `on_conflict = wait` (the default) or `on_conflict = error`",
                    )
                })?;
                set(&mut self.on_conflict, name, value, &mut self.errors);
            }
            "tx" => {
                eq(name, input, "tx = tx")?;
                let value = input.parse::<Ident>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`tx = ...` names the fn's `&mut` transaction argument\nhelp: write `tx = tx` for an argument `tx: &mut sqlx::PgTransaction<'_>`",
                    )
                })?;
                set(&mut self.tx, name, value, &mut self.errors);
            }
            "store" => {
                eq(name, input, "store = self.idem")?;
                let value = input.parse::<Expr>()?;
                set(&mut self.store, name, value, &mut self.errors);
            }
            "heartbeat" => {
                eq(name, input, "heartbeat = false")?;
                let value = input.parse::<LitBool>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`heartbeat` takes `true` or `false`\nhelp: write `heartbeat = false` to stop renewing the lease while the body runs",
                    )
                })?;
                set(&mut self.heartbeat, name, value, &mut self.errors);
            }
            "cache_errors" => {
                let value = if input.peek(Token![=]) {
                    input.parse::<Token![=]>()?;
                    Some(input.parse::<Expr>()?)
                } else {
                    None
                };
                set(&mut self.cache_errors, name, value, &mut self.errors);
            }
            "abort_on_lease_loss" => {
                flag(
                    input,
                    name,
                    "write just `abort_on_lease_loss` to drop the body when its attempt loses its lease, or leave it out",
                )?;
                set_flag(&mut self.abort_on_lease_loss, name, &mut self.errors);
            }
            "stream" => {
                flag(
                    input,
                    name,
                    "write just `stream` for a fn that returns `Result<Streamed<C, E>, E>`, or leave it out",
                )?;
                set_flag(&mut self.stream, name, &mut self.errors);
            }
            "once" => {
                flag(
                    input,
                    name,
                    "write just `once` (one outcome for every call, whatever the arguments), or list the key: `key = (arg, ...)`",
                )?;
                set_flag(&mut self.once, name, &mut self.errors);
            }
            "crate" => {
                eq(name, input, "crate = idem")?;
                let value = crate_path(input)?;
                set(&mut self.krate, name, value, &mut self.errors);
            }
            _ => {
                let help = match closest(&text, &OPTIONS) {
                    Some(best) => format!("did you mean `{best}`? The options are: {GRAMMAR}"),
                    None => format!("the options are: {GRAMMAR}"),
                };
                self.errors.push(syn::Error::new(
                    name.span(),
                    format!("unknown option `{text}` in #[idempotent]\nhelp: {help}"),
                ));
                // Skip its value, if any, so the options after it are still checked.
                if input.peek(Token![=]) {
                    input.parse::<Token![=]>()?;
                    input.parse::<Expr>()?;
                }
            }
        }
        Ok(())
    }
}

/// The name closest to `word`, if one is close enough to be a typo of it (optimal string
/// alignment distance: a swap of two letters is one edit).
pub(crate) fn closest<'a, S: AsRef<str>>(word: &str, names: &'a [S]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (strsim::osa_distance(word, n.as_ref()), n.as_ref()))
        .filter(|(d, n)| *d <= (n.chars().count().max(word.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// `crate = idem` or `crate = "idem"` (serde's spelling): the renamed `idem_runtime`.
fn crate_path(input: ParseStream<'_>) -> syn::Result<syn::Path> {
    let help = "\nhelp: name the dependency as your crate sees it: `crate = idem` when Cargo.toml says `idem = { package = \"idem-runtime\", ... }`";
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        return lit
            .parse_with(syn::Path::parse_mod_style)
            .map_err(|e| syn::Error::new(lit.span(), format!("`crate` takes a path: {e}{help}")));
    }
    input
        .call(syn::Path::parse_mod_style)
        .map_err(|e| syn::Error::new(e.span(), format!("`crate` takes a path{help}")))
}

fn set<T>(slot: &mut Option<Opt<T>>, name: &Ident, value: T, errors: &mut Vec<syn::Error>) {
    if slot.is_some() {
        errors.push(duplicate(name));
    } else {
        *slot = Some(Opt {
            name: name.clone(),
            value,
        });
    }
}

/// A flag option (`once`, `abort_on_lease_loss`) takes no value.
fn flag(input: ParseStream<'_>, name: &Ident, help: &str) -> syn::Result<()> {
    if input.peek(Token![=]) {
        let eq: Token![=] = input.parse()?;
        return Err(syn::Error::new(
            eq.span,
            format!("`{name}` is a flag and takes no value\nhelp: {help}"),
        ));
    }
    Ok(())
}

fn set_flag(slot: &mut Option<Ident>, name: &Ident, errors: &mut Vec<syn::Error>) {
    if slot.is_some() {
        errors.push(duplicate(name));
    } else {
        *slot = Some(name.clone());
    }
}

fn duplicate(name: &Ident) -> syn::Error {
    syn::Error::new(
        name.span(),
        format!(
            "duplicate option `{name}`\nhelp: give `{name}` once; remove this one or the other"
        ),
    )
}

fn eq(name: &Ident, input: ParseStream<'_>, example: &str) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        Ok(())
    } else {
        Err(syn::Error::new(
            name.span(),
            format!("`{name}` needs a value\nhelp: write `{example}`"),
        ))
    }
}

/// `key = (a, b.c)`, `key = a`, or `key = ()`: the entries as expressions (checked by `validate`).
fn key_list(name: &Ident, input: ParseStream<'_>) -> syn::Result<List> {
    eq(name, input, &format!("{name} = (arg, arg.field)"))?;
    let value: Expr = input.parse()?;
    let span = value.span();
    if let Expr::Path(p) = &value {
        if let Some(word) = p
            .path
            .get_ident()
            .filter(|i| *i == "parent" && name == "key")
        {
            return Ok(List {
                entries: Vec::new(),
                span,
                parent: Some(word.clone()),
            });
        }
    }
    let entries = match value {
        Expr::Tuple(t) => t.elems.into_iter().collect(),
        Expr::Paren(p) => vec![*p.expr],
        other => vec![other],
    };
    Ok(List {
        entries,
        span,
        parent: None,
    })
}

fn duration(input: ParseStream<'_>) -> syn::Result<DurationArg> {
    if input.peek(LitStr) {
        return Ok(DurationArg::Literal(input.parse()?));
    }
    Ok(DurationArg::Expr(Box::new(input.parse()?)))
}

/// The span of an option's value, for messages about it.
pub(crate) fn duration_span(arg: &DurationArg) -> Span {
    match arg {
        DurationArg::Literal(lit) => lit.span(),
        DurationArg::Expr(e) => e.span(),
    }
}
