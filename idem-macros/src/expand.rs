//! Expansion of a checked `#[idempotent]` fn: the same signature, with a body that builds a
//! `Call` through the programmatic API and runs the original body through it.
//!
//! ```text
//! async fn f<T: Tone>(title: &str, lang: Lang, llm: &Llm) -> Result<Draft, E> {
//!     macro_rules! __idem_default_operation_name_f__pin_one_with_name_eq { ... } // default name only
//!     let mut store = resolve(None, OP);          // or: `store = expr`, cloned, then `run_on`
//!     run(&mut store, {                           // spanned at the return type
//!         let call = Call::versioned(OP, 1);      // OP = concat!(env!("CARGO_CRATE_NAME"), "::f")
//!         let call = key_part(call, title);       // spanned at `title` in `key = (...)`
//!         let call = key_part(call, &lang);
//!         let call = key_part(call, type_name::<T>()); // each type parameter; const ones by value
//!         call                                    // a temporary: not kept across the await
//!     }, move || async move {
//!         if false { let r: Ret = loop {}; return r; } // the declared return type: pins the output for `?`
//!         { original body }
//!     }).await
//! }
//! ```

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{AttrStyle, ItemFn};

use crate::validate::{PartKind, Plan};

/// The annotated fn, rewritten.
pub(crate) fn expand(plan: Plan, func: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    // Inner attributes of the body (`#![allow(...)]`) move to the fn, where they mean the same.
    let attrs = attrs.into_iter().map(|mut a| {
        a.style = AttrStyle::Outer;
        a
    });

    let call = format_ident!("__idem_call", span = Span::mixed_site());
    let store = format_ident!("__idem_store", span = Span::mixed_site());
    let fake = format_ident!("__idem_output", span = Span::mixed_site());
    let krate = &plan.krate;
    let p = quote!(#krate::__private);

    let op = &plan.op;
    let version = plan.version;
    let mut steps = vec![quote! {
        let #call = #p::Call::versioned(#op, #version);
    }];
    for part in &plan.parts {
        let helper = match part.kind {
            PartKind::Key | PartKind::Generic => quote_spanned!(part.span=> key_part),
            PartKind::Implicit => quote_spanned!(part.span=> implicit_key_part),
            PartKind::Verify => quote_spanned!(part.span=> verify_part),
        };
        let expr = &part.expr;
        let k = respan(krate, part.span);
        steps.push(quote_spanned! {part.span=>
            let #call = #k::__private::#helper(#call, #expr);
        });
    }
    if plan.by_position {
        steps.push(quote!(let #call = #call.by_position();));
    }
    if let Some(d) = &plan.ttl {
        steps.push(quote!(let #call = #call.ttl(#d);));
    }
    if let Some(d) = &plan.lease {
        steps.push(quote!(let #call = #call.lease(#d);));
    }
    if let Some(d) = &plan.wait {
        steps.push(quote!(let #call = #call.wait(#d);));
    }
    if let Some(error) = plan.on_conflict_error {
        let variant = if error { quote!(Error) } else { quote!(Wait) };
        steps.push(quote!(let #call = #call.on_conflict(#p::OnConflict::#variant);));
    }
    if let Some(on) = plan.heartbeat {
        steps.push(quote!(let #call = #call.heartbeat(#on);));
    }
    if plan.abort_on_lease_loss {
        steps.push(quote!(let #call = #call.abort_on_lease_loss(true);));
    }
    // `run`'s bounds on `T` and `E` are checked both where it is called and where its future is
    // awaited; spanning both at the user's return type makes the two reports identical, and
    // the compiler shows one.
    let ret = &plan.ret;
    let ret_span = ret.span();
    let run = match (&plan.store, plan.stream, &plan.tx) {
        (Some(_), _, Some(_)) => quote_spanned!(ret_span=> step_begin_on),
        (None, _, Some(_)) => quote_spanned!(ret_span=> step_begin),
        (Some(_), false, None) => quote_spanned!(ret_span=> run_on),
        (None, false, None) => quote_spanned!(ret_span=> run),
        (Some(_), true, None) => quote_spanned!(ret_span=> run_stream_on),
        (None, true, None) => quote_spanned!(ret_span=> run_stream),
    };
    // How idem's own errors become the fn's error type: `From<idem_runtime::Error>`, or
    // `CallError::Idem` when the fn returns `Result<T, CallError<E>>` (an inherent method of
    // `ErrorType<CallError<E>>`, found before the trait method every other type gets).
    let k = respan(krate, ret_span);
    // `E` comes from `<Ret as ReturnsResult>`, whose `on_unimplemented` is the error for a
    // return type that is not a `Result`; spanned as one token, every use reports the same
    // error (shown once), and what depends on it is an error type, which reports nothing more.
    // The body itself returns `Ret` (which pins the output for `?`), so it agrees with the
    // signature even when `Ret` is not a `Result`.
    let ret_at = respan(&ret.to_token_stream(), ret_span);
    let err_ty = quote_spanned!(ret_span=> <#ret_at as #k::__private::ReturnsResult>::Err);
    let from_idem = quote_spanned! {ret_span=>
        {
            #[allow(unused_imports)]
            use #k::__private::FromIdemError as _;
            #k::__private::ErrorType::<
                #err_ty,
            >::new()
            .idem_errors()
        }
    };
    // Every path is spelled out inside `quote_spanned!`: a bound's error points at the span of
    // the called function's path.
    let errors = match &plan.cache_errors {
        None => quote_spanned! {ret_span=>
            #k::__private::errors_not_recorded(#from_idem)
        },
        Some(None) => quote_spanned! {ret_span=>
            #k::__private::errors_recorded_when(
                #from_idem,
                #k::__private::error_predicate(#k::__private::every_error),
            )
        },
        Some(Some(predicate)) => {
            let span = predicate.span();
            let kp = respan(krate, span);
            let predicate = quote_spanned! {span=>
                #kp::__private::error_predicate(#predicate)
            };
            quote_spanned! {ret_span=>
                #k::__private::errors_recorded_when(#from_idem, #predicate)
            }
        }
    };
    // The store: `store = ...` (cloned, so the body may still move what it borrows from), else
    // the scope or the process default.
    let store_init = match &plan.store {
        Some(expr) => {
            let span = expr.span();
            let ks = respan(krate, span);
            quote_spanned! {span=>
                let #store = ::core::clone::Clone::clone(
                    #ks::__private::store_handle(&(#expr)),
                );
            }
        }
        None => quote! {
            let mut #store = #p::resolve(::core::option::Option::None, #op);
        },
    };
    let store_arg = if plan.store.is_some() {
        quote!(&#store)
    } else {
        quote!(&mut #store)
    };
    // The body's statements in braces of our own (spanned at the attribute): with the user's
    // braces, a body written on one line is a block in tail position that rustc's
    // `unused_braces` asks to unwrap, at the fn's own braces, where removing them is no fix.
    let stmts = &block.stmts;
    let block = Group::new(Delimiter::Brace, quote!(#(#stmts)*));
    let body_block = pinned_body(&fake, &ret_at, &block);
    let body = quote! {
        move || async move { #body_block }
    };
    let call_run = match &plan.tx {
        None => quote_spanned! {ret_span=>
            #k::__private::#run(#store_arg, { #(#steps)* #call }, #errors, #body).await
        },
        Some((tx, _)) => {
            let step = StepParts {
                tx,
                k: &k,
                krate,
                ret_span,
                fake: &fake,
                ret_at: &ret_at,
                block: &block,
            };
            step.expand(&run, &store_arg, &steps, &call, &errors)
        }
    };

    let guard = plan.default_name.as_ref().map(default_name_guard);

    quote! {
        #(#attrs)*
        #vis #sig {
            #guard
            #store_init
            #call_run
        }
    }
}

/// `tokens` (the path of `idem_runtime`) with every token at `span`: a bound's error points at
/// the span of the called function's whole path, which starts with these tokens.
pub(crate) fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut t| {
            if let TokenTree::Group(g) = &t {
                let mut group = Group::new(g.delimiter(), respan(&g.stream(), span));
                group.set_span(span);
                t = TokenTree::Group(group);
            } else {
                t.set_span(span);
            }
            t
        })
        .collect()
}

/// For a fn with the default operation name (`crate::fn`): an exported, hidden `macro_rules!`
/// named after the fn. `#[macro_export]` puts it in the crate root's macro namespace from
/// wherever it is defined (a module, a fn body, an impl's associated fn), so a second fn of the
/// same crate with the same default name is rustc's "defined multiple times" error, pointing at
/// both fn names, instead of two fns silently sharing one key space. It is defined inside the
/// fn's body, so it exists exactly when the fn does (a `#[cfg]`-ed out fn defines none), and it
/// is first there, before any statement. Its name is the error's only text we control, so it
/// says what to do. Nothing refers to it, so the deny-by-default
/// `macro_expanded_macro_exports_accessed_by_absolute_paths` never applies.
fn default_name_guard(fn_name: &syn::Ident) -> TokenStream {
    let span = fn_name.span();
    let guard = format_ident!(
        "__idem_default_operation_name_{}__pin_one_with_name_eq",
        fn_name.unraw(),
        span = span
    );
    // `non_local_definitions` warns about an exported macro defined in a fn body; here the
    // crate-root placement is the whole point, and the macro is never invoked.
    quote_spanned! {span=>
        #[doc(hidden)]
        #[macro_export]
        #[allow(unknown_lints, non_local_definitions)]
        macro_rules! #guard {
            () => {};
        }
    }
}

/// The pieces of a step in the caller's transaction (`tx = arg`).
struct StepParts<'a> {
    tx: &'a syn::Ident,
    k: &'a TokenStream,
    krate: &'a TokenStream,
    ret_span: Span,
    fake: &'a syn::Ident,
    ret_at: &'a TokenStream,
    block: &'a Group,
}

impl StepParts<'_> {
    /// The claim on the caller's transaction, the body inline (an async block, so the annotated
    /// fn's future is `Send` whenever its body's is), then the result recorded on the same
    /// transaction:
    ///
    /// ```text
    /// let errors = ...;
    /// let claim = match step_begin(&mut store, call, &errors, step_connection(&mut *tx)).await {
    ///     StepBegun::Replayed(r) => return r,
    ///     StepBegun::Claimed(c) => c,
    /// };
    /// let result = step_body(&claim, async { if false { ... } { original body } }).await;
    /// step_finish(claim, &errors, step_connection(&mut *tx), result).await
    /// ```
    fn expand(
        &self,
        begin: &TokenStream,
        store_arg: &TokenStream,
        steps: &[TokenStream],
        call: &syn::Ident,
        errors: &TokenStream,
    ) -> TokenStream {
        let Self {
            tx,
            k,
            krate,
            ret_span,
            fake,
            ret_at,
            block,
        } = self;
        let errs = format_ident!("__idem_errors", span = Span::mixed_site());
        let claim = format_ident!("__idem_claim", span = Span::mixed_site());
        let result = format_ident!("__idem_result", span = Span::mixed_site());
        let body = pinned_body(fake, ret_at, block);
        // Checked at the argument's name in `tx = ...`: a type that is not a connection is
        // reported there, once.
        let kt = respan(krate, tx.span());
        let conn = quote_spanned!(tx.span()=> #kt::__private::step_connection(&mut *#tx));
        quote_spanned! {*ret_span=>
            let #errs = #errors;
            let #claim = match #k::__private::#begin(#store_arg, { #(#steps)* #call }, &#errs, #conn).await {
                #k::__private::StepBegun::Replayed(replayed) => return replayed,
                #k::__private::StepBegun::Claimed(claim) => claim,
            };
            let #result = #k::__private::step_body(&#claim, async {
                #body
            })
            .await;
            #k::__private::step_finish(#claim, &#errs, #conn, #result).await
        }
    }
}

/// The body of the async block or closure that runs the fn's body: a never-taken `return` of a
/// value of the declared return type first (it pins the block's output, so `?` and `return` in
/// the body mean what they meant in the fn), then the body's statements.
fn pinned_body(fake: &syn::Ident, ret_at: &TokenStream, block: &Group) -> TokenStream {
    quote! {
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::needless_return,
            clippy::type_complexity,
            clippy::unreachable
        )]
        if false {
            let #fake: #ret_at = loop {};
            return #fake;
        }
        #block
    }
}
