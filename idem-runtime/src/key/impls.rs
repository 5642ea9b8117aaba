//! `IdemKey` for std types (and, behind features, uuid, chrono and time): the canonical encodings.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use super::{IdemKey, KeyWriter};

macro_rules! fixed_width {
    ($($t:ty),*) => {$(
        impl IdemKey for $t {
            fn write_key(&self, out: &mut KeyWriter) {
                out.write_raw(&self.to_le_bytes());
            }
        }
    )*};
}

impl IdemKey for u8 {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_raw(&[*self]);
    }

    fn write_key_slice(items: &[Self], out: &mut KeyWriter) {
        out.write_raw(items);
    }
}

fixed_width!(u16, u32, u64, u128, i8, i16, i32, i64, i128);

impl IdemKey for usize {
    fn write_key(&self, out: &mut KeyWriter) {
        (*self as u64).write_key(out);
    }
}

impl IdemKey for isize {
    fn write_key(&self, out: &mut KeyWriter) {
        (*self as i64).write_key(out);
    }
}

impl IdemKey for bool {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_raw(&[u8::from(*self)]);
    }
}

impl IdemKey for char {
    fn write_key(&self, out: &mut KeyWriter) {
        u32::from(*self).write_key(out);
    }
}

impl IdemKey for str {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_bytes(self.as_bytes());
    }
}

impl IdemKey for String {
    fn write_key(&self, out: &mut KeyWriter) {
        self.as_str().write_key(out);
    }
}

impl IdemKey for () {
    fn write_key(&self, _out: &mut KeyWriter) {}
}

impl<T: IdemKey + ?Sized> IdemKey for &T {
    fn write_key(&self, out: &mut KeyWriter) {
        (**self).write_key(out);
    }
}

impl<T: IdemKey + ?Sized> IdemKey for Box<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        (**self).write_key(out);
    }
}

impl<T: IdemKey + ?Sized> IdemKey for Arc<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        (**self).write_key(out);
    }
}

impl<T: IdemKey + ?Sized> IdemKey for Rc<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        (**self).write_key(out);
    }
}

impl<T: IdemKey + ToOwned + ?Sized> IdemKey for Cow<'_, T> {
    fn write_key(&self, out: &mut KeyWriter) {
        self.as_ref().write_key(out);
    }
}

impl<T: IdemKey> IdemKey for Option<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        match self {
            None => out.write_raw(&[0]),
            Some(v) => {
                out.write_raw(&[1]);
                v.write_key(out);
            }
        }
    }
}

/// Sequences: a `u64` length, then each element. Byte strings (`[u8]`, `Vec<u8>`) therefore
/// encode exactly like a length-prefixed byte string.
impl<T: IdemKey> IdemKey for [T] {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_len(self.len());
        T::write_key_slice(self, out);
    }
}

impl<T: IdemKey> IdemKey for Vec<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        self.as_slice().write_key(out);
    }
}

impl<T: IdemKey> IdemKey for VecDeque<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_len(self.len());
        for item in self {
            item.write_key(out);
        }
    }
}

/// Arrays have a length fixed by their type, so no prefix.
impl<T: IdemKey, const N: usize> IdemKey for [T; N] {
    fn write_key(&self, out: &mut KeyWriter) {
        T::write_key_slice(self, out);
    }
}

impl<T: IdemKey> IdemKey for BTreeSet<T> {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_len(self.len());
        for item in self {
            item.write_key(out);
        }
    }
}

impl<K: IdemKey, V: IdemKey> IdemKey for BTreeMap<K, V> {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_len(self.len());
        for (k, v) in self {
            k.write_key(out);
            v.write_key(out);
        }
    }
}

macro_rules! tuples {
    ($(($($name:ident),+)),*) => {$(
        impl<$($name: IdemKey),+> IdemKey for ($($name,)+) {
            #[allow(non_snake_case)]
            fn write_key(&self, out: &mut KeyWriter) {
                let ($($name,)+) = self;
                $($name.write_key(out);)+
            }
        }
    )*};
}

tuples!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F),
    (A, B, C, D, E, F, G),
    (A, B, C, D, E, F, G, H),
    (A, B, C, D, E, F, G, H, I),
    (A, B, C, D, E, F, G, H, I, J),
    (A, B, C, D, E, F, G, H, I, J, K),
    (A, B, C, D, E, F, G, H, I, J, K, L)
);

/// The 16 bytes of the UUID, in RFC 4122 (big-endian) order.
#[cfg(feature = "uuid")]
impl IdemKey for uuid::Uuid {
    fn write_key(&self, out: &mut KeyWriter) {
        out.write_raw(self.as_bytes());
    }
}

/// Days since 0001-01-01 (proleptic Gregorian, day 1), as `i32`.
#[cfg(feature = "chrono")]
impl IdemKey for chrono::NaiveDate {
    fn write_key(&self, out: &mut KeyWriter) {
        use chrono::Datelike;
        self.num_days_from_ce().write_key(out);
    }
}

/// Seconds since the Unix epoch (`i64`) then nanoseconds (`u32`), in UTC.
#[cfg(feature = "chrono")]
impl IdemKey for chrono::DateTime<chrono::Utc> {
    fn write_key(&self, out: &mut KeyWriter) {
        self.timestamp().write_key(out);
        self.timestamp_subsec_nanos().write_key(out);
    }
}

/// Seconds since the Unix epoch (`i64`) then nanoseconds (`u32`), as if in UTC.
#[cfg(feature = "chrono")]
impl IdemKey for chrono::NaiveDateTime {
    fn write_key(&self, out: &mut KeyWriter) {
        let utc = self.and_utc();
        utc.timestamp().write_key(out);
        utc.timestamp_subsec_nanos().write_key(out);
    }
}

/// Days since 0001-01-01 (day 1), as `i32`: the same encoding as `chrono::NaiveDate`.
#[cfg(feature = "time")]
impl IdemKey for time::Date {
    fn write_key(&self, out: &mut KeyWriter) {
        // Julian day 1721426 is 0001-01-01, chrono's day 1.
        (self.to_julian_day() - 1_721_425).write_key(out);
    }
}

/// Seconds since the Unix epoch (`i64`) then nanoseconds (`u32`), in UTC.
#[cfg(feature = "time")]
impl IdemKey for time::OffsetDateTime {
    fn write_key(&self, out: &mut KeyWriter) {
        self.unix_timestamp().write_key(out);
        self.nanosecond().write_key(out);
    }
}
