//! One mode's run of `--stream`: each prompt's draft read as a stream of tokens by a caller that
//! asks again when a stream breaks off, and for some prompts a duplicate request made while the
//! first stream is under way (a second tab, a retried webhook). Both callers live in this
//! process; the model server's log says who started which generation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use backon::Retryable;
use futures_util::StreamExt;
use idem_runtime::Idem;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::args::{Args, Mode};
use super::attempts;
use super::model_server::ModelServer;
use super::report::{Figures, StreamFigures};
use super::steps::{self, StepError};
use super::stream_client::StreamClient;
use super::stream_steps;
use super::{batch, chance};

/// The longest wait for the next bytes of a stream.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// The duplicate request is made once the first caller has read this many tokens.
const DUPLICATE_AFTER_TOKENS: u64 = 3;

/// Who reads a stream: the server logs it as the request's `user`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    First,
    Duplicate,
}

impl Caller {
    fn user(self) -> &'static str {
        match self {
            Caller::First => "first",
            Caller::Duplicate => "duplicate",
        }
    }
}

/// What the callers of every prompt share.
#[derive(Debug)]
struct Callers {
    idem: Option<Idem>,
    llm: StreamClient,
    batch: String,
    /// Streams callers received and read until they ended (broken ones included).
    streams: AtomicU64,
    /// Calls made again after a stream broke off (or could not start).
    retries: AtomicU64,
}

/// One prompt's two callers, meeting mid-stream.
#[derive(Debug, Default)]
struct Meeting {
    /// Fired when the first caller has read its first tokens.
    started: Mutex<Option<oneshot::Sender<()>>>,
    /// The first caller has read its whole draft.
    first_done: AtomicBool,
    /// The duplicate's last call was answered while the first caller was still reading.
    duplicate_live: AtomicBool,
}

/// How a prompt went.
#[derive(Debug, Default)]
struct PromptOutcome {
    failed: bool,
    /// The duplicate read a draft that was being generated for the first caller.
    duplicate_live: bool,
}

/// Runs the `--stream` batch in `mode` and returns its figures.
pub(crate) async fn run(
    args: &Args,
    mode: Mode,
    idem_store: &str,
    batch_id: &str,
) -> Result<Figures> {
    // Well before the first claim: the store stamps records with its own clock, which may
    // round a claim in this very millisecond down to the one before.
    let since = idem_runtime::record::now_millis();
    let server = ModelServer::start(
        args.seed,
        args.provider_dedup,
        args.drop_pct,
        args.slow_pct,
        args.stream_drop_pct,
    )
    .await?;
    let idem = if mode == Mode::Idem {
        let store = idem_runtime::store::open(idem_store)
            .await
            .with_context(|| format!("opening {idem_store}"))?;
        Some(Idem::builder(store).worker("ai_pipeline/stream").build())
    } else {
        None
    };
    let callers = Arc::new(Callers {
        idem,
        llm: StreamClient::new(&server.url(), READ_TIMEOUT)?,
        batch: batch_id.to_owned(),
        streams: AtomicU64::new(0),
        retries: AtomicU64::new(0),
    });
    let mut prompts = Vec::new();
    for input in batch(args.prompts) {
        let prepared = steps::preprocess_body(&input).await;
        prompts.push(prepared.map_err(|e| anyhow::Error::msg(e.0))?.prompt);
    }

    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut duplicates = 0;
    for prompt in prompts {
        let twice = chance(args.seed, &["duplicate", &prompt]) % 100 < args.duplicate_pct;
        duplicates += u64::from(twice);
        let (callers, permits) = (callers.clone(), permits.clone());
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return (prompt, PromptOutcome::default());
            };
            let outcome = read_prompt(callers, &prompt, twice).await;
            (prompt, outcome)
        });
    }
    let (mut failed, mut attached) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (prompt, outcome) = done?;
        failed += u64::from(outcome.failed);
        // Attached: answered while the first caller's stream was being generated, read in
        // full, and the server never started a generation for it.
        if outcome.duplicate_live
            && !outcome.failed
            && !server
                .streams
                .generated_for(&prompt, Caller::Duplicate.user())
        {
            attached += 1;
        }
    }
    let wall = started.elapsed();

    let attempts = if mode == Mode::Idem {
        attempts::read(idem_store, since).await?
    } else {
        attempts::AttemptsLog::default()
    };
    let meter = &server.streams;
    let tokens = meter.tokens.load(Ordering::SeqCst);
    Ok(Figures {
        model_calls: meter.generations.load(Ordering::SeqCst),
        tokens_billed: tokens,
        dropped: meter.dropped.load(Ordering::SeqCst),
        finished: i64::try_from(args.prompts as u64 - failed).unwrap_or(i64::MAX),
        retries: callers.retries.load(Ordering::SeqCst),
        failed,
        wall,
        attempts,
        stream: Some(StreamFigures {
            streams: callers.streams.load(Ordering::SeqCst),
            stream_tokens_billed: tokens,
            duplicate_generations: meter.duplicate_generations(),
            duplicate_requests: duplicates,
            attached_streams: attached,
        }),
        ..Figures::default()
    })
}

/// Reads `prompt`'s draft as its first caller, and (`twice`) as a duplicate caller who asks
/// once the first has its first tokens.
async fn read_prompt(callers: Arc<Callers>, prompt: &str, twice: bool) -> PromptOutcome {
    let meeting = Arc::new(Meeting::default());
    let duplicate = twice.then(|| {
        let (tx, rx) = oneshot::channel();
        *meeting.started.lock() = Some(tx);
        let (callers, meeting, prompt) = (callers.clone(), meeting.clone(), prompt.to_owned());
        tokio::spawn(async move {
            // Asked anyway if the first caller never got that far: then it replays.
            let _ = rx.await;
            read_with_retries(&callers, &prompt, Caller::Duplicate, &meeting).await
        })
    });
    let first = read_with_retries(&callers, prompt, Caller::First, &meeting).await;
    meeting.first_done.store(true, Ordering::SeqCst);
    // Nobody waits for the signal any more: drop it so a duplicate still waiting goes ahead.
    meeting.started.lock().take();
    let mut outcome = PromptOutcome {
        failed: first.is_err(),
        duplicate_live: false,
    };
    if let Some(handle) = duplicate {
        let second = handle
            .await
            .unwrap_or_else(|e| Err(StepError(e.to_string())));
        if let (Ok(a), Ok(b)) = (&first, &second) {
            if a != b {
                eprintln!("duplicate read a different draft for {prompt:?}");
            }
        }
        outcome.failed |= second.is_err();
        outcome.duplicate_live = meeting.duplicate_live.load(Ordering::SeqCst);
    }
    if let Err(e) = &first {
        eprintln!("prompt {prompt:?} failed after all retries: {e}");
    }
    outcome
}

/// One caller's read of the draft, asked again with backoff while streams break off.
async fn read_with_retries(
    callers: &Callers,
    prompt: &str,
    caller: Caller,
    meeting: &Meeting,
) -> Result<String, StepError> {
    (|| read_once(callers, prompt, caller, meeting))
        .retry(super::caller_retries())
        .notify(|_, _| {
            callers.retries.fetch_add(1, Ordering::SeqCst);
        })
        .await
}

/// One call: the streamed draft, with idem or plain, read to its end.
async fn read_once(
    callers: &Callers,
    prompt: &str,
    caller: Caller,
    meeting: &Meeting,
) -> Result<String, StepError> {
    let user = caller.user();
    let mut tokens = match &callers.idem {
        Some(idem) => {
            stream_steps::stream_draft(idem, &callers.batch, prompt, &callers.llm, user).await?
        }
        None => stream_steps::stream_draft_body(&callers.llm, prompt, user).await?,
    };
    if caller == Caller::Duplicate {
        let live = !meeting.first_done.load(Ordering::SeqCst);
        meeting.duplicate_live.store(live, Ordering::SeqCst);
    }
    callers.streams.fetch_add(1, Ordering::SeqCst);
    let (mut text, mut received) = (String::new(), 0);
    while let Some(token) = tokens.next().await {
        text.push_str(&token?.text);
        received += 1;
        if caller == Caller::First && received == DUPLICATE_AFTER_TOKENS {
            if let Some(started) = meeting.started.lock().take() {
                let _ = started.send(());
            }
        }
    }
    Ok(text)
}
