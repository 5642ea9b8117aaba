//! `#[derive(IdemKey)]`: the canonical key encoding of a user struct or enum.
//!
//! A struct writes its fields in declaration order (like a tuple: no names, no count). An enum
//! writes its variant's index (`u32` LE, declaration order from 0, whatever the discriminants)
//! and then that variant's fields. A field marked `#[idem(skip)]` is left out. Every type
//! parameter gets an `IdemKey` bound.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Field, Fields, Index};

use crate::validate::err;

/// Expands the derive, or returns every error found.
pub(crate) fn derive(input: DeriveInput) -> Result<TokenStream, Vec<syn::Error>> {
    let mut errors = Vec::new();
    for attr in &input.attrs {
        if attr.path().is_ident("idem") {
            errors.push(err(
                attr.span(),
                "`#[idem(...)]` goes on fields, not on the type",
                "mark a field `#[idem(skip)]` to leave it out of the key",
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
            for (index, variant) in e.variants.iter().enumerate() {
                for attr in &variant.attrs {
                    if attr.path().is_ident("idem") {
                        errors.push(err(
                            attr.span(),
                            "`#[idem(...)]` goes on fields, not on variants",
                            "every variant is keyed by its index; mark a field `#[idem(skip)]` to leave it out",
                        ));
                    }
                }
                let Ok(index) = u32::try_from(index) else {
                    errors.push(err(
                        variant.span(),
                        "too many variants",
                        "an enum key has at most 2^32 variants",
                    ));
                    break;
                };
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
                        ::idem_runtime::__private::KeyWriter::write_variant(#out, #index);
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
    if !errors.is_empty() {
        return Err(errors);
    }

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
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::idem_runtime::__private::IdemKey for #name #ty_generics #where_clause {
            fn write_key(&self, #out: &mut ::idem_runtime::__private::KeyWriter) {
                #body
            }
        }
    })
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
                    attr.span(),
                    "unknown `#[idem(...)]` field option",
                    "the only field option is `#[idem(skip)]`, which leaves the field out of the key",
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
