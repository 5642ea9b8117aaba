#![deny(warnings)]
#![allow(dead_code)]

use idem_runtime::{IdemKey, KeyBuilder};

#[derive(IdemKey)]
pub struct Named {
    pub a: u32,
    #[idem(skip)]
    pub cache: f64,
    pub b: String,
}

#[derive(IdemKey)]
pub struct Tuple(pub u8, #[idem(skip)] pub std::time::Instant);

#[derive(IdemKey)]
pub struct Unit;

#[derive(IdemKey)]
pub struct Generic<'a, T, const N: usize> {
    pub items: [T; N],
    pub name: &'a str,
}

#[derive(IdemKey)]
pub enum Kind<T: Clone> {
    A,
    B(T, #[idem(skip)] f32),
    C { x: u16, #[idem(skip)] y: f64 },
    #[idem(tag = "D")]
    Renamed,
    #[allow(non_camel_case_types)]
    r#type,
}

#[derive(IdemKey)]
pub enum Never {}

fn key<T: IdemKey + ?Sized>(v: &T) -> [u8; 32] {
    let mut b = KeyBuilder::new("op", 1);
    b.part(v);
    b.finish()
}

fn main() {
    let n = Named { a: 1, cache: 0.5, b: "x".into() };
    assert_eq!(key(&n), key(&(1_u32, "x")));
    assert!(n.cache > 0.0);
    let t = Tuple(3, std::time::Instant::now());
    assert_eq!(key(&t), key(&3_u8));
    let _ = t.1;
    assert_eq!(key(&Unit), key(&()));
    assert_eq!(key(&Generic { items: [1_u8, 2], name: "n" }), key(&([1_u8, 2], "n")));
    // Variants are keyed by name (or tag), as a `&str` part.
    assert_eq!(key(&Kind::<u8>::A), key("A"));
    assert_eq!(key(&Kind::B(5_u8, 1.0)), key(&("B", 5_u8)));
    assert_eq!(key(&Kind::<u8>::C { x: 9, y: 2.0 }), key(&("C", 9_u16)));
    assert_eq!(key(&Kind::<u8>::Renamed), key("D"));
    assert_eq!(key(&Kind::<u8>::r#type), key("type"));
    let _: Option<&Never> = None;
}
