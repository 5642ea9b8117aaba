//! Golden vectors: the key encoding is a persisted format. If one of these fails, the change
//! would silently re-run every recorded side effect in production: bump the format instead.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use idem_runtime::{Call, IdemKey, KeyBuilder};

fn transcript(op: &str, version: u32, f: impl FnOnce(&mut KeyBuilder)) -> (String, Vec<u8>) {
    let mut b = KeyBuilder::recording(op, version);
    f(&mut b);
    let (hash, bytes) = b.finish_with_transcript();
    (idem_runtime::Key(hash).to_hex(), bytes.unwrap())
}

#[test]
fn transcript_layout_is_pinned() {
    let (_, bytes) = transcript("op", 3, |b| {
        b.part("hé")
            .part(&7_u16)
            .part(&-1_i32)
            .part(&true)
            .part(&Some('x'))
            .part(&None::<u8>);
    });
    let expected: Vec<u8> = [
        &2u64.to_le_bytes()[..],
        b"op",               // op name
        &3u32.to_le_bytes(), // version
        &3u64.to_le_bytes(),
        "hé".as_bytes(),        // str
        &7u16.to_le_bytes(),    // u16
        &(-1i32).to_le_bytes(), // i32
        &[1],                   // bool
        &[1],
        &('x' as u32).to_le_bytes(), // Some(char)
        &[0],                        // None
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[test]
fn collections_layout_is_pinned() {
    let (_, bytes) = transcript("c", 1, |b| {
        b.part(&vec![1_u8, 2])
            .part(&BTreeSet::from([2_u32, 1]))
            .part(&BTreeMap::from([("b", 2_u8), ("a", 1_u8)]))
            .part(&(1_u8, [9_u8, 8]));
    });
    let expected: Vec<u8> = [
        &1u64.to_le_bytes()[..],
        b"c",
        &1u32.to_le_bytes(),
        &2u64.to_le_bytes(),
        &[1, 2], // Vec<u8>
        &2u64.to_le_bytes(),
        &1u32.to_le_bytes(),
        &2u32.to_le_bytes(), // ordered set
        &2u64.to_le_bytes(),
        &1u64.to_le_bytes(),
        b"a",
        &[1],
        &1u64.to_le_bytes(),
        b"b",
        &[2],
        &[1],
        &[9, 8], // tuple with array
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[test]
fn key_hashes_are_pinned() {
    let cases = [
        (
            Call::new("generate_draft")
                .key(&("Rust tips", "en", 20261123_u32))
                .key_value(),
            "fca71ea9b9a762243537608c78aaeaad444b3511658d2a6291f77596e1a1c657",
        ),
        (
            Call::versioned("generate_draft", 2)
                .key(&("Rust tips", "en", 20261123_u32))
                .key_value(),
            "c31097095312bd8da309dc291725d25ece93eb036366fc2bd7103ab964a6e038",
        ),
        (
            Call::new("charge")
                .key(&uuid::Uuid::from_u128(0x1234))
                .key_value(),
            "5ef9d81fd07f84b2e41305491352aa405ab64c86fcf7af59aaa9a08e5e0d3584",
        ),
        (
            Call::new("noop").key_value(),
            "589003185ec20ce479459efcb862d792364ec92c01e5ee5d8d4eaca9b57abdfd",
        ),
        (
            Call::new("dates")
                .key(&chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap())
                .key_value(),
            "da3f90c231a393eaad46f310b5f9d89f8040842d27896a064b91b79d22137958",
        ),
    ];
    for (i, (key, expected)) in cases.iter().enumerate() {
        assert_eq!(key.to_hex(), *expected, "golden key {}", i + 1);
    }
}

#[test]
fn parts_one_by_one_equal_a_tuple() {
    assert_eq!(
        Call::new("op").part("a").part(&1_u8).key_value(),
        Call::new("op").key(&("a", 1_u8)).key_value()
    );
}

#[test]
fn chrono_and_time_dates_encode_alike() {
    let c = Call::new("d")
        .key(&chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap())
        .key_value();
    let t = Call::new("d")
        .key(&time::Date::from_calendar_date(2026, time::Month::November, 23).unwrap())
        .key_value();
    assert_eq!(c, t);
}

#[test]
fn fingerprint_differs_from_key_of_equal_inputs() {
    let key = KeyBuilder::new("op", 1).finish();
    let fp = KeyBuilder::fingerprint("op", 1).finish();
    assert_ne!(key, fp);
}

#[test]
fn hex_round_trips() {
    let key = Call::new("x").key(&1_u8).key_value();
    assert_eq!(idem_runtime::Key::from_hex(&key.to_hex()), Some(key));
    assert_eq!(idem_runtime::Key::from_hex("zz"), None);
}

/// A derived enum: variants are keyed by name (or `#[idem(tag = "...")]`), never by position.
#[derive(IdemKey)]
enum Payment {
    Card {
        last4: u16,
    },
    /// Renamed from `Transfer`; the tag keeps its records.
    #[idem(tag = "Transfer")]
    BankTransfer(String),
    Cash,
}

#[test]
fn derived_enum_layout_is_pinned() {
    let (_, bytes) = transcript("e", 1, |b| {
        b.part(&Payment::Card { last4: 4242 })
            .part(&Payment::BankTransfer("DE89".into()))
            .part(&Payment::Cash);
    });
    let expected: Vec<u8> = [
        &1u64.to_le_bytes()[..],
        b"e",
        &1u32.to_le_bytes(),
        &4u64.to_le_bytes(),
        b"Card", // variant name, as a str part
        &4242u16.to_le_bytes(),
        &8u64.to_le_bytes(),
        b"Transfer", // the tag, not the variant's name
        &4u64.to_le_bytes(),
        b"DE89",
        &4u64.to_le_bytes(),
        b"Cash", // a unit variant: its name only
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[test]
fn derived_enum_keys_are_pinned() {
    let cases = [
        (
            Call::new("pay")
                .key(&Payment::Card { last4: 4242 })
                .key_value(),
            "b08ac616c6ef34895ef2ee92e66cfd4dd6be574e8ffd0f3afe0f694928a2c934",
        ),
        (
            Call::new("pay")
                .key(&Payment::BankTransfer("DE89".into()))
                .key_value(),
            "f9f6ab02e0672d646bd540232c6daf88ddee7be84943dbb2200d5ec01fd28342",
        ),
        (
            Call::new("pay").key(&Payment::Cash).key_value(),
            "a1162d89968c2a07dd5497f8f5f54ed54c7e830e5fefbf5177f9ea0d29595b0c",
        ),
    ];
    for (i, (key, expected)) in cases.iter().enumerate() {
        assert_eq!(key.to_hex(), *expected, "golden enum key {}", i + 1);
    }
    // The same bytes as the variant's name written as a `&str` part.
    assert_eq!(
        Call::new("pay").key(&Payment::Cash).key_value(),
        Call::new("pay").key("Cash").key_value()
    );
}

/// `key = parent`: the key of step `position` of a parent is pinned, and does not depend on the
/// step's operation (that is in its fingerprint, which is how a changed pipeline is caught).
#[test]
fn position_keys_are_pinned() {
    let parent = Call::new("agent").key(&7_u64).key_value();
    let keys: Vec<String> = (0..3)
        .map(|i| idem_runtime::key::position_key(&parent, i).to_hex())
        .collect();
    assert_eq!(keys, POSITION_KEYS);
    assert_ne!(keys[0], keys[1]);
}

/// Computed independently (Python's `blake3` package) from the layout in the key module's docs.
const POSITION_KEYS: [&str; 3] = [
    "449f4d41c5853e1bbefebb2f9973e54b3d4ef9648d1f80187dcf3d6821a63b30",
    "ac702432dadc7cd99d5a881bc435c7fe8e82cc18600ab7cb7e00e50a699e4f62",
    "3adb1e23bc33200fddec1e4ace9311b46ba99bcf1b5a7587eaa3f99aedba1a51",
];
