//! The `ttl`, `lease` and `wait` values: a string literal parsed at compile time by
//! `humantime::parse_duration`, or any expression of type `Duration`.

use proc_macro2::TokenStream;
use quote::{quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Expr, Lit};

use crate::expand::respan;
use crate::parse::{duration_span, DurationArg, Opt};
use crate::validate::err;

/// The examples every duration message ends with.
const GRAMMAR_HELP: &str = "write a number and a unit: \"24h\", \"30s\", \"500ms\", \"1h 30m\", \"7days\" (units: ns, us, ms, s, m, h, d, w, and their long names); or any expression of type `std::time::Duration`";

/// The `Duration` expression of one duration option, or `None` (absent, or an error pushed).
pub(crate) fn duration_opt(
    opt: &Option<Opt<DurationArg>>,
    krate: &TokenStream,
    errors: &mut Vec<syn::Error>,
) -> Option<TokenStream> {
    let Opt { name, value } = opt.as_ref()?;
    match value {
        DurationArg::Literal(lit) => {
            let text = lit.value();
            if !text.trim().is_empty() && text.trim().bytes().all(|b| b.is_ascii_digit()) {
                errors.push(err(
                    lit.span(),
                    &format!("`{text}` has no unit: a bare number is ambiguous"),
                    &format!("add a unit, e.g. `{name} = \"{}s\"`", text.trim()),
                ));
                return None;
            }
            match humantime::parse_duration(&text) {
                Ok(d) if d.is_zero() && name != "wait" => {
                    errors.push(err(
                        lit.span(),
                        &format!("`{name}` cannot be zero"),
                        &format!("give a positive duration, e.g. `{name} = \"30s\"`"),
                    ));
                    None
                }
                Ok(d) => {
                    let secs = d.as_secs();
                    let nanos = d.subsec_nanos();
                    Some(quote_spanned!(lit.span()=> ::core::time::Duration::new(#secs, #nanos)))
                }
                Err(reason) => {
                    errors.push(err(
                        lit.span(),
                        &format!("`{text}` is not a duration: {reason}"),
                        GRAMMAR_HELP,
                    ));
                    None
                }
            }
        }
        DurationArg::Expr(e) => {
            if let Expr::Lit(syn::ExprLit { lit, .. }) = &**e {
                let suggestion = match lit {
                    Lit::Int(i) => Some(format!("`{name} = \"{}s\"`", i.base10_digits())),
                    Lit::Float(f) => Some(format!(
                        "`{name} = ::std::time::Duration::from_secs_f64({})`",
                        f.base10_digits()
                    )),
                    _ => None,
                };
                if let Some(suggestion) = suggestion {
                    errors.push(err(
                        duration_span(value),
                        &format!("`{name}` needs a unit: a bare number is ambiguous"),
                        &format!(
                            "write it as a string with a unit, e.g. {suggestion}, or as a `Duration` (`Duration::from_secs(...)`)"
                        ),
                    ));
                    return None;
                }
            }
            let span = e.span();
            let e = e.to_token_stream();
            let krate = respan(krate, span);
            Some(quote_spanned!(span=> #krate::__private::duration(#e)))
        }
    }
}
