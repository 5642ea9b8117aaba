//! What `#[idempotent]` and `#[derive(IdemKey)]` expand to call: thin helpers over the
//! programmatic API ([`Call`], [`Idem::call`]) whose bounds are marker traits with diagnostics
//! written for the attribute's user.
//!
//! Each bound is checked by the helper the expansion calls at the user's own token (the key-list
//! entry, the argument, the return type), so a missing `IdemKey`, `Serialize` or
//! `From<idem_runtime::Error>` is one error, spanned where the fix goes. (The bounds of `run` are
//! also checked where its future is awaited; the expansion spans both at the return type, so the
//! compiler's two reports are identical and it shows one.) Every marker trait has
//! a blanket impl marked `#[diagnostic::do_not_recommend]`, so the compiler names the marker (and
//! its message), not the trait behind it.
//!
//! Nothing here is a public API: it is reached through `idem_runtime::__private` and changes
//! without notice.

use std::fmt::Display;
use std::future::{ready, Future, Ready};

use futures_util::future::{Either, Map};
use futures_util::FutureExt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::Call;
use crate::error::Error;
pub use crate::execute::Errors;
use crate::idem::Idem;
use crate::key::IdemKey;
pub use crate::replay::{CacheErrorsWhen, ErrorPolicy, NoErrorCache};
use crate::stream::Streamed;

/// An argument that is part of the key because the attribute gives no `key = (...)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of an idempotency key, yet without `key = (...)` every argument is part of the key",
    label = "this argument has no stable encoding (`IdemKey` is not implemented for `{Self}`)",
    note = "when `key = (...)` is omitted, every argument except `self` is part of the key, in order",
    note = "list the arguments that identify the call and leave this one out: `#[idempotent(key = (arg1, arg2))]`"
)]
pub trait ImplicitKeyPart: IdemKey {}

#[diagnostic::do_not_recommend]
impl<T: IdemKey + ?Sized> ImplicitKeyPart for T {}

/// A value named in `verify = (...)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a payload fingerprint",
    label = "named in `verify = (...)`, but `IdemKey` is not implemented for `{Self}`",
    note = "the fingerprint uses the key encoding: give `{Self}` `#[derive(IdemKey)]`, or verify keyable fields of it (`arg.field`)"
)]
pub trait VerifyPart: IdemKey {}

#[diagnostic::do_not_recommend]
impl<T: IdemKey + ?Sized> VerifyPart for T {}

/// The success type of an idempotent fn, encoded as the recorded snapshot.
#[diagnostic::on_unimplemented(
    message = "the success type `{Self}` cannot be recorded: it does not implement `serde::Serialize`",
    label = "the `Ok` value is recorded as a snapshot and replayed to every retry",
    note = "derive both on it: `#[derive(serde::Serialize, serde::Deserialize)]`, or return a type that has them",
    note = "for a stream of chunks (`Streamed<C, E>`), add the `stream` option: `#[idempotent(key = (...), stream)]`"
)]
pub trait SnapshotOut: Serialize {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + ?Sized> SnapshotOut for T {}

/// The success type of an idempotent fn, decoded from a recorded snapshot.
#[diagnostic::on_unimplemented(
    message = "the success type `{Self}` cannot be replayed: it does not implement `serde::de::DeserializeOwned`",
    label = "the `Ok` value is decoded from the recorded snapshot on every replay",
    note = "derive both on it: `#[derive(serde::Serialize, serde::Deserialize)]`; a type that borrows (`&str`, `&[u8]`) cannot be decoded: return an owned one (`String`, `Vec<u8>`)"
)]
pub trait SnapshotIn: DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<T: DeserializeOwned> SnapshotIn for T {}

/// The error type of an idempotent fn: idem's own errors reach the caller through it.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` cannot carry idem's errors: `From<idem_runtime::Error>` is not implemented for it",
    label = "a store failure, a reused key or a missing store is returned as this type",
    note = "if `{Self}` is your type, add `impl From<idem_runtime::Error> for {Self}`, or with thiserror a variant `#[error(transparent)] Idem(#[from] idem_runtime::Error)`",
    note = "if it is not (`std::io::Error`, another crate's enum), return `Result<_, idem_runtime::CallError<{Self}>>`: `?` in the body still works, and idem's errors arrive as `CallError::Idem`"
)]
pub trait CarriesIdemErrors: From<Error> {}

#[diagnostic::do_not_recommend]
impl<E: From<Error>> CarriesIdemErrors for E {}

/// The `Ok` and `Err` types of an idempotent fn's return type (`Result<T, E>`, or an alias of
/// it such as `std::io::Result<T>`).
#[diagnostic::on_unimplemented(
    message = "an #[idempotent] fn must return `Result<T, E>`, not `{Self}`",
    label = "the return type must be `Result<T, E>` or an alias of it",
    note = "return `Result<T, E>` with `T: Serialize + Deserialize` (the recorded value) and `E: From<idem_runtime::Error> + Display` (idem's own errors reach the caller through it)"
)]
pub trait ReturnsResult {
    /// The success type.
    type Ok;
    /// The error type.
    type Err;
    /// The value as the `Result` it is.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
    /// The `Result` as the return type it is.
    fn from_result(result: Result<Self::Ok, Self::Err>) -> Self;
}

impl<T, E> ReturnsResult for Result<T, E> {
    type Ok = T;
    type Err = E;
    #[inline]
    fn into_result(self) -> Self {
        self
    }
    #[inline]
    fn from_result(result: Self) -> Self {
        result
    }
}

/// Picks how idem's own errors become an annotated fn's error type `E`:
/// `ErrorType::<E>::new().idem_errors()` is `CallError::Idem` for `E = CallError<B>` (the inherent
/// method below), and `E::from` for every other `E` ([`FromIdemError`], which then requires
/// [`CarriesIdemErrors`]: its message is the diagnostic).
#[derive(Debug)]
pub struct ErrorType<E>(PhantomData<fn() -> E>);

impl<E> ErrorType<E> {
    /// The selector for `E`.
    #[inline]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<B> ErrorType<crate::CallError<B>> {
    /// idem's errors become [`crate::CallError::Idem`].
    #[inline]
    pub fn idem_errors(&self) -> fn(Error) -> crate::CallError<B> {
        crate::CallError::Idem
    }
}

/// The fallback of [`ErrorType::idem_errors`]: `E::from`.
pub trait FromIdemError<E> {
    /// `E::from`, for an `E: From<idem_runtime::Error>`.
    fn idem_errors(&self) -> fn(Error) -> E
    where
        E: CarriesIdemErrors;
}

impl<E> FromIdemError<E> for ErrorType<E> {
    #[inline]
    fn idem_errors(&self) -> fn(Error) -> E
    where
        E: CarriesIdemErrors,
    {
        E::from
    }
}

/// The error type of an idempotent fn must print: its text goes into the attempts log.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` does not implement `Display`",
    label = "a failed attempt's error text is written to the attempts log",
    note = "implement `std::fmt::Display` for `{Self}` (thiserror's `#[error(\"...\")]` does)"
)]
pub trait DisplayError: Display {}

#[diagnostic::do_not_recommend]
impl<E: Display + ?Sized> DisplayError for E {}

/// With `cache_errors`, the error type is recorded and replayed too.
#[diagnostic::on_unimplemented(
    message = "with `cache_errors`, the error type `{Self}` is recorded and replayed, so it must implement `Serialize` and `Deserialize`",
    label = "`Err` values of this type are stored as snapshots",
    note = "derive them on it: `#[derive(serde::Serialize, serde::Deserialize)]`, or remove `cache_errors` (a failed attempt is then retried)"
)]
pub trait CachedError: Serialize + DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<E: Serialize + DeserializeOwned> CachedError for E {}

/// The predicate of `cache_errors = ...`.
#[diagnostic::on_unimplemented(
    message = "`cache_errors = ...` takes a function from a reference to the fn's error type to `bool`, not `{Self}`",
    label = "called with each error of the body: `true` records it (and replays it), `false` lets the next call retry",
    note = "name a method of the error type such as `fn is_permanent(&self) -> bool` (`cache_errors = MyError::is_permanent`), or a closure `|e: &MyError| ...`; write just `cache_errors` to record every error"
)]
pub trait ErrorPredicate<E>: Fn(&E) -> bool {}

#[diagnostic::do_not_recommend]
impl<E, P: Fn(&E) -> bool> ErrorPredicate<E> for P {}

/// A checked `cache_errors = ...` predicate (its error type fixed by where it is used), with
/// how to call it, so nothing after [`error_predicate`] needs (and re-reports) its bound.
#[derive(Debug)]
pub struct Predicate<E, P> {
    predicate: P,
    accepts: fn(&P, &E) -> bool,
}

/// Checks the predicate of `cache_errors = ...` where the user wrote it.
#[inline]
pub fn error_predicate<E, P: ErrorPredicate<E>>(predicate: P) -> Predicate<E, P> {
    Predicate {
        predicate,
        accepts: |predicate, err| predicate(err),
    }
}

/// The predicate of a bare `cache_errors`: every error is recorded.
#[inline]
pub fn every_error<E>(_: &E) -> bool {
    true
}

/// Errors are not recorded (no `cache_errors`); idem's own become `E` through `from_idem`.
#[inline]
pub fn errors_not_recorded<E>(from_idem: fn(Error) -> E) -> Errors<E, NoErrorCache> {
    Errors {
        from_idem,
        policy: NoErrorCache,
    }
}

/// The errors `predicate` accepts are recorded and replayed (`cache_errors`).
#[inline]
pub fn errors_recorded_when<E: CachedError, P>(
    from_idem: fn(Error) -> E,
    predicate: Predicate<E, P>,
) -> Errors<E, CacheErrorsWhen<E, P>> {
    Errors {
        from_idem,
        policy: CacheErrorsWhen::checked(predicate.predicate, predicate.accepts),
    }
}

/// What `store = ...` may name: an [`Idem`], a reference to one, or an `Arc`/`Rc`/`Box` of one.
#[diagnostic::on_unimplemented(
    message = "`store = ...` must be an `idem_runtime::Idem`, not `{Self}`",
    label = "this is not a store handle",
    note = "pass an `Idem` (or a reference to one): `store = self.idem`, `store = &IDEM`; or drop `store = ...` and use `Idem::scope` or `Idem::set_default`"
)]
pub trait StoreHandle {
    /// The handle.
    fn idem_handle(&self) -> &Idem;
}

impl StoreHandle for Idem {
    #[inline]
    fn idem_handle(&self) -> &Idem {
        self
    }
}

impl<T: StoreHandle + ?Sized> StoreHandle for &T {
    #[inline]
    fn idem_handle(&self) -> &Idem {
        (**self).idem_handle()
    }
}

impl<T: StoreHandle + ?Sized> StoreHandle for Arc<T> {
    #[inline]
    fn idem_handle(&self) -> &Idem {
        (**self).idem_handle()
    }
}

impl<T: StoreHandle + ?Sized> StoreHandle for Rc<T> {
    #[inline]
    fn idem_handle(&self) -> &Idem {
        (**self).idem_handle()
    }
}

impl<T: StoreHandle + ?Sized> StoreHandle for Box<T> {
    #[inline]
    fn idem_handle(&self) -> &Idem {
        (**self).idem_handle()
    }
}

/// The handle of `store = ...`.
#[inline]
pub fn store_handle<S: StoreHandle + ?Sized>(store: &S) -> &Idem {
    store.idem_handle()
}

/// Checks that a `ttl`/`lease`/`wait` expression is a `Duration`.
#[inline]
pub const fn duration(d: Duration) -> Duration {
    d
}

/// Appends an explicit key part (`key = (...)`). The bound is `IdemKey` itself, so the
/// compiler's "consider restricting `T`" suggestion for a generic part names the public trait.
#[inline]
pub fn key_part<T: IdemKey + ?Sized>(call: Call, part: &T) -> Call {
    call.part(part)
}

/// Appends an implicit key part (an argument, when `key = (...)` is omitted).
#[inline]
pub fn implicit_key_part<T: ImplicitKeyPart + ?Sized>(call: Call, part: &T) -> Call {
    call.part(part)
}

/// Appends a payload part (`verify = (...)`).
#[inline]
pub fn verify_part<T: VerifyPart + ?Sized>(call: Call, part: &T) -> Call {
    call.verify(part)
}

/// The store error of a failed [`crate::scope::resolve`], taken out of its slot (which keeps a
/// placeholder), so `run` needs no `Clone` on [`Error`].
fn take_error(slot: &mut Result<Idem, Error>) -> Error {
    match std::mem::replace(slot, Err(Error::Config(String::new()))) {
        Err(e) => e,
        Ok(idem) => {
            *slot = Ok(idem);
            Error::Config("idem: store slot held a handle".to_owned())
        }
    }
}

/// Runs an annotated fn's body on the store [`crate::scope::resolve`] found (scope or
/// process default), or returns its error as `E`. Not an `async fn`: it returns the engine's
/// own future (or a ready store error), so the annotated fn costs what the programmatic call
/// costs, with no extra state machine around the (large) [`Call`].
///
/// The body's output is the fn's declared return type `R` itself, so a return type that is not
/// a `Result` fails one bound (`R: ReturnsResult`, spanned at the return type) and nothing
/// else: the body and the fn's signature still agree with each other.
#[inline]
pub fn run<'a, R, P, F, Fut>(
    store: &'a mut Result<Idem, Error>,
    call: Call,
    errors: Errors<R::Err, P>,
    body: F,
) -> Either<Returned<impl Future<Output = ResultOf<R>> + use<'a, R, P, F, Fut>, R>, Ready<R>>
where
    R: ReturnsResult,
    R::Ok: SnapshotOut + SnapshotIn,
    R::Err: DisplayError,
    P: ErrorPolicy<R::Err>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    match store {
        Ok(idem) => Either::Left(returned(idem.call_with(call, errors, as_result(body)))),
        Err(_) => Either::Right(ready(R::from_result(Err((errors.from_idem)(take_error(
            store,
        )))))),
    }
}

/// Runs an annotated fn's body on the handle of `store = ...`: returns the engine's own future,
/// so the annotated fn costs what the programmatic call costs.
#[inline]
pub fn run_on<'a, R, P, F, Fut>(
    idem: &'a Idem,
    call: Call,
    errors: Errors<R::Err, P>,
    body: F,
) -> Returned<impl Future<Output = ResultOf<R>> + use<'a, R, P, F, Fut>, R>
where
    R: ReturnsResult,
    R::Ok: SnapshotOut + SnapshotIn,
    R::Err: DisplayError,
    P: ErrorPolicy<R::Err>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    returned(idem.call_with(call, errors, as_result(body)))
}

/// The `Result` a return type `R` is.
pub type ResultOf<R> = Result<<R as ReturnsResult>::Ok, <R as ReturnsResult>::Err>;

/// The body's future, its output seen as the `Result` it is.
pub type AsResult<Fut, R> = Map<Fut, fn(R) -> ResultOf<R>>;

/// The engine's future, its `Result` given back as the fn's declared return type.
pub type Returned<Fut, R> = Map<Fut, fn(ResultOf<R>) -> R>;

/// The engine's future, its output as the fn's declared return type.
#[inline]
fn returned<R: ReturnsResult, Fut: Future<Output = Result<R::Ok, R::Err>>>(
    engine: Fut,
) -> Returned<Fut, R> {
    engine.map(R::from_result as fn(_) -> R)
}

/// The body, its output seen as the `Result` it is.
#[inline]
fn as_result<R, F, Fut>(body: F) -> impl FnOnce() -> AsResult<Fut, R>
where
    R: ReturnsResult,
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    move || body().map(R::into_result as fn(R) -> _)
}

/// With `stream`, the success type of the fn: [`Streamed`].
#[diagnostic::on_unimplemented(
    message = "with `stream`, an #[idempotent] fn must return `Result<Streamed<C, E>, E>`, and its success type is `{Self}`",
    label = "the success type must be `idem_runtime::Streamed<C, E>`, with the fn's error type as `E`",
    note = "wrap the body's stream of `Result<C, E>` items: `Ok(Streamed::new(stream))`; or remove `stream` to record one value"
)]
pub trait StreamedOut {
    /// The chunk type.
    type Chunk;
    /// The error type of its items.
    type Error;
    /// The value as the [`Streamed`] it is.
    fn into_streamed(self) -> Streamed<Self::Chunk, Self::Error>;
    /// The [`Streamed`] as the success type it is.
    fn from_streamed(stream: Streamed<Self::Chunk, Self::Error>) -> Self;
}

impl<C, E> StreamedOut for Streamed<C, E> {
    type Chunk = C;
    type Error = E;
    #[inline]
    fn into_streamed(self) -> Self {
        self
    }
    #[inline]
    fn from_streamed(stream: Self) -> Self {
        stream
    }
}

/// The chunk type of a `stream` fn, encoded into the journal and decoded on every replay.
#[diagnostic::on_unimplemented(
    message = "the chunk type `{Self}` cannot be journaled: it must implement `Serialize`, `Deserialize` and `Send`, and own its data",
    label = "each chunk is journaled as it is produced and decoded on every replay",
    note = "derive both on it: `#[derive(serde::Serialize, serde::Deserialize)]`; a type that borrows (`&str`) cannot be decoded: use an owned one (`String`)"
)]
pub trait ChunkType: Serialize + DeserializeOwned + Send + 'static {}

#[diagnostic::do_not_recommend]
impl<C: Serialize + DeserializeOwned + Send + 'static> ChunkType for C {}

/// The error type of a `stream` fn travels with the stream, so it must be `Send` and own its data.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` of a `stream` fn must be `Send` and own its data (`'static`)",
    label = "errors travel with the stream the caller reads",
    note = "use an owned, `Send` error type (a `String` or an enum of owned fields instead of borrowed ones)"
)]
pub trait StreamError: Send + 'static {}

#[diagnostic::do_not_recommend]
impl<E: Send + 'static> StreamError for E {}

/// The stream a return type `R` holds.
pub type StreamOf<R> = Streamed<
    <<R as ReturnsResult>::Ok as StreamedOut>::Chunk,
    <<R as ReturnsResult>::Ok as StreamedOut>::Error,
>;

/// The engine's future for a `stream` fn, its output given back as the declared return type.
pub type ReturnedStream<Fut, R> = Map<Fut, fn(Result<StreamOf<R>, <R as ReturnsResult>::Err>) -> R>;

/// The body's future of a `stream` fn, its output seen as the engine's.
pub type AsStreamResult<Fut, R> = Map<Fut, fn(R) -> Result<StreamOf<R>, <R as ReturnsResult>::Err>>;

/// The body of a `stream` fn, its output seen as the engine's.
fn as_stream_result<R, F, Fut>(body: F) -> impl FnOnce() -> AsStreamResult<Fut, R>
where
    R: ReturnsResult,
    R::Ok: StreamedOut,
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    move || body().map((|r: R| r.into_result().map(StreamedOut::into_streamed)) as fn(R) -> _)
}

/// The engine's output as the declared return type of a `stream` fn.
fn stream_returned<R>(result: Result<StreamOf<R>, R::Err>) -> R
where
    R: ReturnsResult,
    R::Ok: StreamedOut,
{
    R::from_result(result.map(<R::Ok as StreamedOut>::from_streamed))
}

/// [`run`] for a `stream` fn: runs its body on the store [`crate::scope::resolve`] found.
#[inline]
#[allow(clippy::type_complexity)]
pub fn run_stream<'a, R, P, F, Fut>(
    store: &'a mut Result<Idem, Error>,
    call: Call,
    errors: Errors<R::Err, P>,
    body: F,
) -> Either<
    ReturnedStream<impl Future<Output = Result<StreamOf<R>, R::Err>> + use<'a, R, P, F, Fut>, R>,
    Ready<R>,
>
where
    R: ReturnsResult,
    R::Ok: StreamedOut<Error = R::Err>,
    <R::Ok as StreamedOut>::Chunk: ChunkType,
    R::Err: DisplayError + StreamError,
    P: ErrorPolicy<R::Err> + Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    match store {
        Ok(idem) => Either::Left(
            idem.stream_with(call, errors, as_stream_result(body))
                .map(stream_returned::<R> as fn(_) -> R),
        ),
        Err(_) => Either::Right(ready(R::from_result(Err((errors.from_idem)(take_error(
            store,
        )))))),
    }
}

/// [`run_on`] for a `stream` fn: runs its body on the handle of `store = ...`.
#[inline]
#[allow(clippy::type_complexity)]
pub fn run_stream_on<'a, R, P, F, Fut>(
    idem: &'a Idem,
    call: Call,
    errors: Errors<R::Err, P>,
    body: F,
) -> ReturnedStream<impl Future<Output = Result<StreamOf<R>, R::Err>> + use<'a, R, P, F, Fut>, R>
where
    R: ReturnsResult,
    R::Ok: StreamedOut<Error = R::Err>,
    <R::Ok as StreamedOut>::Chunk: ChunkType,
    R::Err: DisplayError + StreamError,
    P: ErrorPolicy<R::Err> + Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    idem.stream_with(call, errors, as_stream_result(body))
        .map(stream_returned::<R> as fn(_) -> R)
}

/// The `tx = arg` argument of an annotated fn, checked where the fn names it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub struct StepArg<'a, C: ?Sized> {
    conn: &'a mut C,
    conn_of: crate::step::ConnOf<C>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl<C: ?Sized> std::fmt::Debug for StepArg<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepArg")
    }
}

/// Checks that `tx = arg` names a connection a step can run on, at the argument.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[inline]
pub fn step_connection<C: crate::step::StepConnection + ?Sized>(conn: &mut C) -> StepArg<'_, C> {
    StepArg {
        conn,
        conn_of: crate::step::conn_of::<C>(),
    }
}

/// What [`step_begin`] found: a replay (the fn returns it), or a claim (the body runs, then
/// [`step_finish`]).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug)]
// Returned once per step and matched at once: boxing the claim would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum StepBegun<R, T> {
    /// The fn's result, replayed.
    Replayed(R),
    /// The body runs as this attempt.
    Claimed(crate::step::StepClaim<T>),
}

/// The claim of a step in the caller's transaction (`tx = arg`), on the store
/// [`crate::scope::resolve`] found. The body then runs inline in the annotated fn (no closure:
/// its future stays `Send` like any other), and [`step_finish`] records its result.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub async fn step_begin<R, P, C>(
    store: &mut Result<Idem, Error>,
    call: Call,
    errors: &Errors<R::Err, P>,
    conn: StepArg<'_, C>,
) -> StepBegun<R, R::Ok>
where
    R: ReturnsResult,
    R::Ok: SnapshotOut + SnapshotIn,
    R::Err: DisplayError,
    P: ErrorPolicy<R::Err>,
    C: ?Sized,
{
    match store {
        Ok(idem) => step_begin_on(idem, call, errors, conn).await,
        Err(_) => StepBegun::Replayed(R::from_result(Err((errors.from_idem)(take_error(store))))),
    }
}

/// [`step_begin`] on the handle of `store = ...`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub async fn step_begin_on<R, P, C>(
    idem: &Idem,
    call: Call,
    errors: &Errors<R::Err, P>,
    conn: StepArg<'_, C>,
) -> StepBegun<R, R::Ok>
where
    R: ReturnsResult,
    R::Ok: SnapshotOut + SnapshotIn,
    R::Err: DisplayError,
    P: ErrorPolicy<R::Err>,
    C: ?Sized,
{
    let StepArg { conn, conn_of } = conn;
    match crate::step::begin(&idem.inner, call, conn, conn_of, errors).await {
        Ok(crate::step::Begun::Replayed(replayed)) => StepBegun::Replayed(R::from_result(replayed)),
        Ok(crate::step::Begun::Claimed(claim)) => StepBegun::Claimed(claim),
        Err(e) => StepBegun::Replayed(R::from_result(Err(e))),
    }
}

/// Runs a claimed step's body with [`crate::current`] telling it its call.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub async fn step_body<T, F: Future>(claim: &crate::step::StepClaim<T>, body: F) -> F::Output {
    use tracing::Instrument;
    crate::context::with_current(claim.info(), body)
        .instrument(claim.span.clone())
        .await
}

/// Records the body's result of a claimed step on the caller's transaction.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub async fn step_finish<R, P, C>(
    claim: crate::step::StepClaim<R::Ok>,
    errors: &Errors<R::Err, P>,
    conn: StepArg<'_, C>,
    result: R,
) -> R
where
    R: ReturnsResult,
    R::Ok: SnapshotOut + SnapshotIn,
    R::Err: DisplayError,
    P: ErrorPolicy<R::Err>,
    C: ?Sized,
{
    let StepArg { conn, conn_of } = conn;
    R::from_result(crate::step::finish(claim, conn_of(conn), errors, result.into_result()).await)
}
