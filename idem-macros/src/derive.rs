//! `#[derive(IdemKey)]`: the canonical key encoding of a user struct or enum.
//!
//! A struct writes its fields in declaration order (like a tuple: no names, no count). An enum
//! writes its variant's tag, then that variant's fields. The tag is the variant's name, or the
//! string of `#[idem(tag = "...")]` on the variant, encoded as a `&str` key part is (`u64` LE
//! byte length, then the UTF-8 bytes). So inserting, removing or reordering variants never
//! changes another variant's keys, and a variant renamed with `#[idem(tag = "OldName")]` keeps
//! its own; two variants with the same tag are a compile error. (Keying by index, as before,
//! re-keyed every later variant when one was inserted.) A field marked `#[idem(skip)]` is left
//! out. Every type parameter gets an `IdemKey` bound.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Field, Fields, Index, LitStr, Variant};

use crate::validate::err;

/// Expands the derive, or returns every error found.
pub(crate) fn derive(input: DeriveInput) -> Result<TokenStream, Vec<syn::Error>> {
    let mut errors = Vec::new();
    for attr in &input.attrs {
        if attr.path().is_ident("idem") {
            errors.push(err(
                attr.span(),
                "`#[idem(...)]` goes on fields and enum variants, not on the type",
                "mark a field `#[idem(skip)]` to leave it out of the key, or a variant `#[idem(tag = \"...\")]` to key it by a name of your own",
            ));
        }
    }
    let out = format_ident!("__idem_out");
    let body = match &input.data {
        Data::Struct(s) => {
            let writes = fields_writes(&s.fields, &out, &mut errors, |i, f| match &f.ident {
                Some(name) => quote!(&self.#name),
                None => {
                    let index = Index::from(i);
                    quote!(&self.#index)
                }
            });
            quote!(#(#writes)*)
        }
        Data::Enum(e) => {
            let mut arms = Vec::new();
            // Each variant's tag and the variant that took it, to reject a second use.
            let mut tags: Vec<(String, &syn::Ident)> = Vec::new();
            for variant in &e.variants {
                let explicit = variant_tag(variant, &mut errors);
                let tag = match &explicit {
                    Some(lit) => lit.clone(),
                    None => LitStr::new(&variant.ident.unraw().to_string(), variant.ident.span()),
                };
                let text = tag.value();
                if let Some((_, first)) = tags.iter().find(|(t, _)| *t == text) {
                    errors.push(err(
                        tag.span(),
                        &format!(
                            "variant `{}` is keyed as \"{text}\", and so is variant `{first}`",
                            variant.ident
                        ),
                        "a variant's tag (its `#[idem(tag = \"...\")]`, else its name) starts its key, so two variants with one tag would share keys: give each a different tag",
                    ));
                } else {
                    tags.push((text, &variant.ident));
                }
                let name = &variant.ident;
                let binding = |i: usize, f: &Field| match &f.ident {
                    Some(ident) => format_ident!("__idem_f_{}", ident),
                    None => format_ident!("__idem_f_{}", i),
                };
                let writes = fields_writes(&variant.fields, &out, &mut errors, |i, f| {
                    let b = binding(i, f);
                    quote!(#b)
                });
                let pattern = match &variant.fields {
                    Fields::Named(named) => {
                        let binds = named.named.iter().enumerate().map(|(i, f)| {
                            let ident = &f.ident;
                            if is_skipped(f) {
                                quote!(#ident: _)
                            } else {
                                let b = binding(i, f);
                                quote!(#ident: #b)
                            }
                        });
                        quote!({ #(#binds,)* })
                    }
                    Fields::Unnamed(unnamed) => {
                        let binds = unnamed.unnamed.iter().enumerate().map(|(i, f)| {
                            if is_skipped(f) {
                                quote!(_)
                            } else {
                                let b = binding(i, f);
                                quote!(#b)
                            }
                        });
                        quote!(( #(#binds,)* ))
                    }
                    Fields::Unit => quote!(),
                };
                arms.push(quote! {
                    Self::#name #pattern => {
                        <str as ::idem_runtime::__private::IdemKey>::write_key(#tag, #out);
                        #(#writes)*
                    }
                });
            }
            if arms.is_empty() {
                quote!(match *self {})
            } else {
                quote! {
                    match self {
                        #(#arms)*
                    }
                }
            }
        }
        Data::Union(u) => {
            errors.push(err(
                u.union_token.span,
                "`IdemKey` cannot be derived for a union",
                "key on a struct or an enum, or implement `IdemKey` by hand",
            ));
            quote!()
        }
    };
    let name = &input.ident;
    let mut generics = input.generics.clone();
    let params: Vec<_> = generics.type_params().map(|t| t.ident.clone()).collect();
    let where_clause = generics.make_where_clause();
    for param in params {
        where_clause
            .predicates
            .push(syn::parse_quote!(#param: ::idem_runtime::__private::IdemKey));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    if !errors.is_empty() {
        // Like thiserror: the errors, and an impl that writes nothing (it is never run: the
        // crate does not compile), so each use of the type does not add "`IdemKey` is not
        // implemented" to the real error.
        let mut out: TokenStream = errors.into_iter().map(|e| e.to_compile_error()).collect();
        out.extend(quote! {
            #[automatically_derived]
            impl #impl_generics ::idem_runtime::__private::IdemKey for #name #ty_generics #where_clause {
                fn write_key(&self, _: &mut ::idem_runtime::__private::KeyWriter) {}
            }
        });
        return Ok(out);
    }
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::idem_runtime::__private::IdemKey for #name #ty_generics #where_clause {
            fn write_key(&self, #out: &mut ::idem_runtime::__private::KeyWriter) {
                #body
            }
        }
    })
}

/// The tag of `#[idem(tag = "...")]` on a variant, if any; every misuse of `#[idem(...)]` on a
/// variant becomes an error.
fn variant_tag(variant: &Variant, errors: &mut Vec<syn::Error>) -> Option<LitStr> {
    let help = "the only variant option is `#[idem(tag = \"name\")]`, which keys the variant by that string instead of its name (so it can be renamed and keep its keys)";
    let mut tag: Option<LitStr> = None;
    for attr in &variant.attrs {
        if !attr.path().is_ident("idem") {
            continue;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident("tag") {
                return Err(err(
                    meta.path.span(),
                    "unknown `#[idem(...)]` variant option",
                    help,
                ));
            }
            let lit: LitStr = meta
                .value()
                .and_then(|v| v.parse())
                .map_err(|e| err(e.span(), "`tag` takes a string literal", help))?;
            if lit.value().is_empty() {
                return Err(err(
                    lit.span(),
                    "a variant's tag cannot be empty",
                    "the tag names the variant in every key: give it a name, e.g. `#[idem(tag = \"Card\")]`",
                ));
            }
            if tag.is_some() {
                return Err(err(
                    meta.path.span(),
                    "the variant has two tags",
                    "give `#[idem(tag = \"...\")]` once",
                ));
            }
            tag = Some(lit);
            Ok(())
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    tag
}

/// Where an error about an `#[idem(...)]` attribute points: at what is inside the parentheses
/// (the unknown option), else at the attribute.
fn option_span(attr: &syn::Attribute) -> proc_macro2::Span {
    match &attr.meta {
        syn::Meta::List(list) if !list.tokens.is_empty() => list.tokens.span(),
        _ => attr.span(),
    }
}

/// `#[idem(skip)]` is on the field.
fn is_skipped(field: &Field) -> bool {
    field.attrs.iter().any(|a| {
        a.path().is_ident("idem") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "skip")
    })
}

/// The writes of the non-skipped fields, each spanned at its type so an unkeyable field is
/// reported there.
fn fields_writes(
    fields: &Fields,
    out: &syn::Ident,
    errors: &mut Vec<syn::Error>,
    access: impl Fn(usize, &Field) -> TokenStream,
) -> Vec<TokenStream> {
    let mut writes = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let mut skip = false;
        for attr in &field.attrs {
            if !attr.path().is_ident("idem") {
                continue;
            }
            match attr.parse_args::<syn::Ident>() {
                Ok(i) if i == "skip" => skip = true,
                _ => errors.push(err(
                    option_span(attr),
                    "unknown `#[idem(...)]` field option",
                    "the only field option is `#[idem(skip)]`, which leaves the field out of the key (`#[idem(tag = \"...\")]` goes on enum variants)",
                )),
            }
        }
        if skip {
            continue;
        }
        let value = access(i, field);
        let ty = &field.ty;
        writes.push(quote_spanned! {ty.span()=>
            <#ty as ::idem_runtime::__private::IdemKey>::write_key(#value, #out);
        });
    }
    writes
}
