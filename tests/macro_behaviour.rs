//! Run-time behaviour of `#[idempotent]` and `#[derive(IdemKey)]`: runs once, replays, keeps `?`
//! and `return`, works on methods and trait impls, and derives the keys of the programmatic API.
#![allow(clippy::panic, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idem_runtime::{idempotent, Call, Idem, IdemKey, KeyBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum AppError {
    Idem(String),
    Bad(String),
}

impl From<idem_runtime::Error> for AppError {
    fn from(e: idem_runtime::Error) -> Self {
        AppError::Idem(e.to_string())
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Idem(e) => write!(f, "idem: {e}"),
            AppError::Bad(e) => write!(f, "bad: {e}"),
        }
    }
}

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        AppError::Bad(e.to_string())
    }
}

static RUNS: AtomicU32 = AtomicU32::new(0);

#[idempotent(key = (title, lang))]
async fn generate(title: &str, lang: &str, runs: &AtomicU32) -> Result<String, AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(format!("{title} in {lang}"))
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    }
}

#[test]
fn runs_once_and_replays() {
    runtime().block_on(async {
        let idem = Idem::memory();
        let runs = AtomicU32::new(0);
        idem.scope(async {
            for _ in 0..3 {
                let d = generate("Rust tips", "en", &runs).await;
                assert_eq!(d, Ok("Rust tips in en".to_owned()));
            }
            let other = generate("Rust tips", "fr", &runs).await;
            assert_eq!(other, Ok("Rust tips in fr".to_owned()));
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}

#[idempotent(key = (input), name = "parse_number")]
async fn parse_number(input: &str, runs: &AtomicU32) -> Result<u64, AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    if input.is_empty() {
        return Err(AppError::Bad("empty".into()));
    }
    let n: u64 = input.parse()?;
    if n == 0 {
        return Ok(1);
    }
    Ok(n * 2)
}

#[test]
fn question_mark_and_return_work_and_errors_are_retried() {
    runtime().block_on(async {
        let idem = Idem::memory();
        let runs = AtomicU32::new(0);
        idem.scope(async {
            assert_eq!(parse_number("21", &runs).await, Ok(42));
            assert_eq!(parse_number("0", &runs).await, Ok(1));
            assert_eq!(
                parse_number("", &runs).await,
                Err(AppError::Bad("empty".into()))
            );
            assert!(matches!(
                parse_number("x", &runs).await,
                Err(AppError::Bad(_))
            ));
            assert!(matches!(
                parse_number("x", &runs).await,
                Err(AppError::Bad(_))
            ));
            assert_eq!(parse_number("21", &runs).await, Ok(42));
        })
        .await;
        // "21", "0", "", "x" twice (errors are not recorded), and "21" replayed.
        assert_eq!(runs.load(Ordering::SeqCst), 5);
    });
}

#[idempotent(key = (code), cache_errors)]
async fn charge(code: u32, runs: &AtomicU32) -> Result<u32, AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    if code == 0 {
        Err(AppError::Bad("declined".into()))
    } else {
        Ok(code)
    }
}

#[test]
fn cache_errors_replays_errors() {
    runtime().block_on(async {
        let idem = Idem::memory();
        let runs = AtomicU32::new(0);
        idem.scope(async {
            for _ in 0..3 {
                assert_eq!(
                    charge(0, &runs).await,
                    Err(AppError::Bad("declined".into()))
                );
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    });
}

/// The key the running body sees, as hex.
fn current_key() -> String {
    match idem_runtime::current() {
        Some(info) => info.key.to_hex(),
        None => String::new(),
    }
}

#[idempotent(key = (title, lang, date), version = 3)]
async fn keyed(
    title: &str,
    lang: String,
    date: u32,
    _client: &AtomicU32,
) -> Result<String, AppError> {
    Ok(current_key())
}

#[idempotent(name = "pinned::name")]
async fn implicit_key(a: u64, b: &str, c: Option<Vec<u8>>) -> Result<String, AppError> {
    Ok(current_key())
}

#[test]
fn macro_key_equals_programmatic_key() {
    runtime().block_on(async {
        let idem = Idem::memory();
        idem.scope(async {
            let got = keyed("Rust tips", "en".to_owned(), 20_260_101, &RUNS).await;
            // The default name is the crate's name and the fn's, not the module path.
            let want = Call::versioned(concat!(env!("CARGO_CRATE_NAME"), "::keyed"), 3)
                .part("Rust tips")
                .part(&"en".to_owned())
                .part(&20_260_101_u32)
                .key_value();
            assert_eq!(got, Ok(want.to_hex()));
            assert_eq!(env!("CARGO_CRATE_NAME"), "macro_behaviour");

            let got = implicit_key(7, "b", Some(vec![1, 2])).await;
            let want = Call::new("pinned::name")
                .key(&(7_u64, "b", Some(vec![1_u8, 2])))
                .key_value();
            assert_eq!(got, Ok(want.to_hex()));
            // Pinned: any change to the encoding or the expansion fails here.
            let golden = Call::new("pinned::name")
                .part(&7_u64)
                .part("b")
                .part(&Some(vec![1_u8, 2]))
                .key_value();
            assert_eq!(got, Ok(golden.to_hex()));
        })
        .await;
    });
}

/// Deep in modules, as after a refactor that moved it: the default name is still
/// `macro_behaviour::moved_fn`, so the move kept its keys.
mod billing {
    pub(crate) mod v2 {
        use super::super::{current_key, idempotent, AppError};

        #[idempotent(key = (id))]
        pub(crate) async fn moved_fn(id: u32) -> Result<String, AppError> {
            Ok(current_key())
        }
    }
}

#[test]
fn default_name_survives_module_moves() {
    runtime().block_on(async {
        let idem = Idem::memory();
        idem.scope(async {
            let got = billing::v2::moved_fn(4).await;
            let want = Call::new("macro_behaviour::moved_fn")
                .part(&4_u32)
                .key_value();
            assert_eq!(got, Ok(want.to_hex()));
        })
        .await;
    });
}

/// One outcome for every call, whatever the arguments: the explicit opt-in that `key = ()`
/// on a fn with arguments is not.
#[idempotent(once)]
async fn warm_up(region: &str, runs: &AtomicU32) -> Result<String, AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(format!("{region} {}", current_key()))
}

#[test]
fn once_runs_once_whatever_the_arguments() {
    runtime().block_on(async {
        let idem = Idem::memory();
        let runs = AtomicU32::new(0);
        idem.scope(async {
            let key = Call::new("macro_behaviour::warm_up").key_value().to_hex();
            let want = Ok(format!("eu {key}"));
            assert_eq!(warm_up("eu", &runs).await, want);
            assert_eq!(warm_up("us", &runs).await, want);
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    });
}

/// A generic fn: each instantiation is its own key space.
#[idempotent(key = (id))]
async fn convert<T: Default + std::fmt::Debug>(
    id: u32,
    runs: &AtomicU32,
) -> Result<String, AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(format!("{id}:{:?}:{}", T::default(), current_key()))
}

/// A const parameter: each value is its own key space.
#[idempotent(key = (id))]
async fn chunked<const N: usize>(id: u32, runs: &AtomicU32) -> Result<String, AppError> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(current_key())
}

#[test]
fn generic_instantiations_have_their_own_keys() {
    runtime().block_on(async {
        let idem = Idem::memory();
        let runs = AtomicU32::new(0);
        idem.scope(async {
            let unsigned = convert::<u32>(1, &runs).await;
            let signed = convert::<i32>(1, &runs).await;
            assert_ne!(unsigned, signed);
            // Replayed: same instantiation, same key parts.
            assert_eq!(convert::<u32>(1, &runs).await, unsigned);
            // The key: the key parts, then `type_name::<T>()` as a `&str` part. Pinned.
            let want = Call::new("macro_behaviour::convert")
                .part(&1_u32)
                .part("u32")
                .key_value();
            assert_eq!(unsigned, Ok(format!("1:0:{}", want.to_hex())));
            assert_eq!(runs.load(Ordering::SeqCst), 2);

            let four = chunked::<4>(7, &runs).await;
            let eight = chunked::<8>(7, &runs).await;
            assert_ne!(four, eight);
            assert_eq!(chunked::<4>(7, &runs).await, four);
            let want = Call::new("macro_behaviour::chunked")
                .part(&7_u32)
                .part(&4_usize)
                .key_value();
            assert_eq!(four, Ok(want.to_hex()));
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    });
}

#[derive(Debug, Clone, IdemKey)]
struct Request {
    customer: u64,
    sku: String,
    #[idem(skip)]
    _note: f64,
}

#[derive(IdemKey)]
struct Pair(u8, #[idem(skip)] f32, String);

#[derive(IdemKey)]
struct Unit;

#[derive(IdemKey)]
enum Shape<T> {
    Empty,
    Circle(u32),
    Rect {
        w: u32,
        h: T,
        #[idem(skip)]
        _label: f64,
    },
    /// Renamed from `Tri`: the tag keeps its keys.
    #[idem(tag = "Tri")]
    Triangle(u8),
}

fn key_of<T: IdemKey + ?Sized>(value: &T) -> Vec<u8> {
    let mut b = KeyBuilder::recording("derive", 1);
    b.part(value);
    b.finish_with_transcript().1.unwrap_or_default()
}

fn prefix() -> Vec<u8> {
    key_of(&())
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = prefix();
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

#[test]
fn derive_encodes_like_hand_encoding() {
    let r = Request {
        customer: 42,
        sku: "ab".into(),
        _note: 1.5,
    };
    assert_eq!(key_of(&r), key_of(&(42_u64, "ab")));
    assert_eq!(
        key_of(&r),
        concat(&[&42_u64.to_le_bytes(), &2_u64.to_le_bytes(), b"ab"])
    );
    let pair = Pair(3, 0.5, "x".into());
    assert_eq!(pair.1, 0.5);
    assert_eq!(key_of(&pair), key_of(&(3_u8, "x")));
    assert_eq!(key_of(&Unit), prefix());
    // A variant is keyed by its name (or tag), encoded as a `&str` part, then its fields.
    assert_eq!(key_of(&Shape::<u8>::Empty), key_of("Empty"));
    assert_eq!(
        key_of(&Shape::<u8>::Empty),
        concat(&[&5_u64.to_le_bytes(), b"Empty"])
    );
    assert_eq!(key_of(&Shape::<u8>::Circle(9)), key_of(&("Circle", 9_u32)));
    assert_eq!(
        key_of(&Shape::Rect {
            w: 2,
            h: 7_u16,
            _label: 0.0
        }),
        concat(&[
            &4_u64.to_le_bytes(),
            b"Rect",
            &2_u32.to_le_bytes(),
            &7_u16.to_le_bytes()
        ])
    );
    assert_eq!(key_of(&Shape::<u8>::Triangle(3)), key_of(&("Tri", 3_u8)));
}

#[idempotent(key = (req.customer, req.sku), verify = (qty))]
async fn place(req: &Request, qty: u32) -> Result<u32, AppError> {
    Ok(qty)
}

#[test]
fn field_keys_and_verify() {
    runtime().block_on(async {
        let idem = Idem::memory();
        idem.scope(async {
            let req = Request {
                customer: 1,
                sku: "x".into(),
                _note: 0.0,
            };
            assert_eq!(place(&req, 3).await, Ok(3));
            assert_eq!(place(&req, 3).await, Ok(3));
            let reused = place(&req, 4).await;
            assert!(
                matches!(&reused, Err(AppError::Idem(m)) if m.contains("different payload")),
                "{reused:?}"
            );
        })
        .await;
    });
}

#[derive(Debug, IdemKey)]
struct Tenant {
    id: u32,
}

struct Service {
    idem: Idem,
    runs: AtomicU32,
    tenant: Tenant,
}

impl Service {
    #[idempotent(name = "Service::handle", key = (order), store = self.idem, ttl = "1h", lease = "10s", wait = Duration::from_secs(2), on_conflict = error, heartbeat = false)]
    async fn handle(&self, order: u64) -> Result<u64, AppError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(order + 1)
    }

    #[idempotent(name = "Service::tenant_op", key = (self.tenant, n))]
    async fn tenant_op(&self, n: u8) -> Result<String, AppError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(current_key())
    }
}

#[test]
fn methods_with_explicit_store() {
    runtime().block_on(async {
        let svc = Service {
            idem: Idem::memory(),
            runs: AtomicU32::new(0),
            tenant: Tenant { id: 5 },
        };
        // No scope, no default: `store = self.idem` is used.
        assert_eq!(svc.handle(1).await, Ok(2));
        assert_eq!(svc.handle(1).await, Ok(2));
        assert_eq!(svc.runs.load(Ordering::SeqCst), 1);
        let key = svc.idem.scope(svc.tenant_op(9)).await;
        let want = Call::new("Service::tenant_op")
            .part(&5_u32)
            .part(&9_u8)
            .key_value();
        assert_eq!(key, Ok(want.to_hex()));
        // Without a store anywhere: `Error::NoStore`, as the fn's error type.
        let none = svc.tenant_op(10).await;
        assert!(
            matches!(&none, Err(AppError::Idem(m)) if m.contains("no store")),
            "{none:?}"
        );
    });
}

trait Pipeline {
    async fn step(&self, input: u32) -> Result<u32, AppError>;
}

struct Doubler(Arc<AtomicU32>);

impl Pipeline for Doubler {
    #[idempotent(name = "Doubler::step", key = (input))]
    async fn step(&self, input: u32) -> Result<u32, AppError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(input * 2)
    }
}

#[test]
fn trait_impls() {
    runtime().block_on(async {
        let idem = Idem::memory();
        let runs = Arc::new(AtomicU32::new(0));
        let d = Doubler(runs.clone());
        idem.scope(async {
            assert_eq!(d.step(4).await, Ok(8));
            assert_eq!(d.step(4).await, Ok(8));
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    });
}

#[idempotent(key = (items), ttl = "1h30m")]
async fn generic_sum<'a, T>(
    items: &'a [u32],
    extra: T,
    label: impl AsRef<str>,
) -> Result<u64, AppError>
where
    T: Into<u64>,
{
    //! Inner doc comments and attributes stay.
    #![allow(clippy::needless_borrow)]
    let _ = label.as_ref();
    Ok(items.iter().map(|&i| u64::from(i)).sum::<u64>() + extra.into())
}

#[test]
fn generics_lifetimes_and_impl_trait() {
    runtime().block_on(async {
        let idem = Idem::memory();
        idem.scope(async {
            assert_eq!(generic_sum(&[1, 2], 3_u8, "a").await, Ok(6));
            // Replayed: `extra` and `label` are not in the key, and `T` is still `u8`.
            assert_eq!(generic_sum(&[1, 2], 100_u8, String::from("b")).await, Ok(6));
            // Another `T` is another key space: it runs.
            assert_eq!(generic_sum(&[1, 2], 100_u32, "c").await, Ok(103));
        })
        .await;
    });
}

#[tracing::instrument(skip(map))]
#[idempotent(key = (id))]
async fn instrumented(id: u32, map: BTreeMap<u32, u32>) -> Result<u32, AppError> {
    Ok(map.get(&id).copied().unwrap_or_default())
}

#[idempotent(key = (id))]
#[tracing::instrument]
async fn instrumented_inside(id: u32) -> Result<u32, AppError> {
    Ok(id)
}

#[test]
fn stacks_with_tracing_instrument() {
    runtime().block_on(async {
        let idem = Idem::memory();
        idem.scope(async {
            let map = BTreeMap::from([(1, 10)]);
            assert_eq!(instrumented(1, map.clone()).await, Ok(10));
            assert_eq!(instrumented(1, BTreeMap::new()).await, Ok(10));
            assert_eq!(instrumented_inside(3).await, Ok(3));
        })
        .await;
    });
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let runs = AtomicU32::new(0);
    let fut = generate("a", "b", &runs);
    assert_send(&fut);
    drop(fut);
    let fut = generic_sum(&[1], 1_u8, "x");
    assert_send(&fut);
}

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
enum PaymentError {
    #[error("card declined")]
    Declined,
    #[error("provider timed out")]
    Timeout,
    #[error(transparent)]
    Idem(#[from] idem_runtime::Error),
}

impl PaymentError {
    fn is_permanent(&self) -> bool {
        matches!(self, PaymentError::Declined)
    }
}

#[idempotent(key = (order), cache_errors = PaymentError::is_permanent)]
async fn pay(
    order: u32,
    outcome: fn() -> Result<u32, PaymentError>,
    runs: &AtomicU32,
) -> Result<u32, PaymentError> {
    runs.fetch_add(1, Ordering::SeqCst);
    outcome()
}

#[test]
fn cache_errors_with_a_predicate_records_only_permanent_errors() {
    runtime().block_on(async {
        let runs = AtomicU32::new(0);
        Idem::memory()
            .scope(async {
                let timeout = pay(1, || Err(PaymentError::Timeout), &runs).await;
                assert!(matches!(timeout, Err(PaymentError::Timeout)));
                let retried = pay(1, || Ok(10), &runs).await;
                assert!(matches!(retried, Ok(10)), "a transient error is retried");
                let declined = pay(2, || Err(PaymentError::Declined), &runs).await;
                assert!(matches!(declined, Err(PaymentError::Declined)));
                let replayed = pay(2, || Ok(20), &runs).await;
                assert!(matches!(replayed, Err(PaymentError::Declined)), "replayed");
            })
            .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    });
}

/// An error type that cannot hold idem's errors: the fn returns `CallError<io::Error>` and its
/// body still uses `?` on `io::Error`.
#[idempotent(key = (path))]
async fn read_file(
    path: &str,
    runs: &AtomicU32,
) -> Result<String, idem_runtime::CallError<std::io::Error>> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(std::fs::read_to_string(path)?)
}

#[test]
fn call_error_carries_the_body_error_and_idems() {
    runtime().block_on(async {
        let runs = AtomicU32::new(0);
        let missing = Idem::memory()
            .scope(read_file("/definitely/not/here", &runs))
            .await;
        assert!(
            matches!(&missing, Err(idem_runtime::CallError::Body(e)) if e.kind() == std::io::ErrorKind::NotFound),
            "{missing:?}"
        );
        Idem::clear_default();
        let no_store = read_file("/definitely/not/here", &runs).await;
        assert!(
            matches!(no_store, Err(idem_runtime::CallError::Idem(idem_runtime::Error::NoStore { .. }))),
            "{no_store:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "without a store the body does not run");
    });
}

#[idempotent(key = (id), lease = "150ms", abort_on_lease_loss)]
async fn long_job(id: u32, started: &tokio::sync::Notify) -> Result<u32, AppError> {
    started.notify_one();
    std::future::pending::<()>().await;
    Ok(id)
}

#[test]
fn abort_on_lease_loss_drops_the_body() {
    runtime().block_on(async {
        let idem = Idem::memory();
        let started = tokio::sync::Notify::new();
        let job = idem.scope(long_job(7, &started));
        let release = async {
            started.notified().await;
            let key = Call::new("macro_behaviour::long_job")
                .key(&7_u32)
                .key_value();
            assert!(idem.store().release(&key).await.unwrap());
        };
        let (outcome, ()) = tokio::join!(job, release);
        let Err(AppError::Idem(text)) = outcome else {
            panic!("expected the lease-lost error, got {outcome:?}");
        };
        assert!(text.contains("lost its lease"), "{text}");
    });
}

#[idempotent(key = (id))]
async fn tiny_step(id: u32) -> Result<u32, AppError> {
    Ok(id + 1)
}

#[idempotent(key = (id))]
async fn two_steps(id: u32) -> Result<u32, AppError> {
    let a = tiny_step(id).await?;
    tiny_step(a).await
}

/// The engine's state is boxed once per call, so an annotated fn's future stays small however
/// many annotated calls nest (clippy's `large_futures` would otherwise fire on small pipelines).
#[test]
fn annotated_futures_are_small() {
    let one = std::mem::size_of_val(&tiny_step(1));
    let nested = std::mem::size_of_val(&two_steps(1));
    let programmatic = std::mem::size_of_val(
        &Idem::memory().call(Call::new("size").key(&1_u32), || async {
            Ok::<_, AppError>(1_u32)
        }),
    );
    println!("future sizes: annotated {one} B, nested {nested} B, programmatic {programmatic} B");
    assert!(one <= 512, "annotated future is {one} bytes");
    assert!(nested <= 512, "nested annotated future is {nested} bytes");
    assert!(
        programmatic <= 512,
        "programmatic future is {programmatic} bytes"
    );
}

static DRAFTS: AtomicU32 = AtomicU32::new(0);

/// A streamed response: one generation, then replays of the same chunks; `?` before the stream
/// still works, and a cached error ends the replay as it ended the original.
#[idempotent(key = (prompt), stream, cache_errors)]
async fn draft_stream(
    prompt: &str,
    words: &str,
) -> Result<idem_runtime::Streamed<String, AppError>, AppError> {
    use futures_util::stream;
    DRAFTS.fetch_add(1, Ordering::SeqCst);
    let count: usize = words.parse()?;
    let prompt = prompt.to_owned();
    let tokens = (0..count).map(move |i| Ok(format!("{prompt}-{i}")));
    let tail = [Err(AppError::Bad("length".into()))];
    Ok(idem_runtime::Streamed::new(stream::iter(
        tokens.chain(tail),
    )))
}

#[test]
fn stream_attribute_generates_once_and_replays() {
    use futures_util::StreamExt;
    runtime().block_on(async {
        let idem = Idem::memory();
        idem.scope(async {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let s = draft_stream("hi", "3").await.unwrap();
                seen.push(s.collect::<Vec<_>>().await);
            }
            assert_eq!(DRAFTS.load(Ordering::SeqCst), 1);
            for items in &seen {
                assert_eq!(items.len(), 4);
                assert_eq!(items[0], Ok("hi-0".to_string()));
                assert_eq!(items[3], Err(AppError::Bad("length".into())));
            }
            // An error before the stream is an ordinary failure (`?` on the parse).
            assert!(matches!(
                draft_stream("other", "x").await,
                Err(AppError::Bad(_))
            ));
        })
        .await;
    });
}
