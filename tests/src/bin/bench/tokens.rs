//! Token validation per second against the raw signature checks of the same crypto library
//! (aws-lc-rs), run back to back: each algorithm, a repeated token served from the cache, and
//! junk refused before any cryptography.

use std::time::{Duration, Instant, SystemTime};

use portguard::tokens::{
    TokenCache,
    testkit::{claims, encoded, issuers, keys, raw_signature_check, validator},
};
use serde_json::json;

use crate::{Args, median, spread};

/// Validations are at least this share of raw signature checks.
const VALIDATION_GOAL: f64 = 0.7;
/// Junk is refused at least this many times faster than a signature check.
const JUNK_GOAL: f64 = 100.0;
/// Calls between two looks at the clock.
const BATCH: u32 = 100;
const MEASURE: Duration = Duration::from_millis(300);

pub fn run(args: &Args) -> anyhow::Result<()> {
    println!("\n## Token validation against raw signature checks (aws-lc-rs)\n");
    println!(
        "| case | per second (median) | raw checks per second | ratio (median, min-max) | goal |"
    );
    println!("|---|---|---|---|---|");
    let (keys, validator, issuers) = (keys(), validator(), issuers());

    for signer in [&keys.rsa, &keys.ec, &keys.ed] {
        let token = encoded(signer, &claims(json!({})));
        let mut raw = raw_signature_check(signer, &token);
        let validate = || {
            validator
                .validate(&token, &issuers, SystemTime::now())
                .is_ok()
        };
        row(
            &format!("{:?} validation", signer.alg),
            args,
            validate,
            &mut raw,
            Goal::AtLeast(VALIDATION_GOAL),
        );
    }

    let token = encoded(&keys.ec, &claims(json!({})));
    let holder = validator.validate(&token, &issuers, SystemTime::now())?;
    let cache = TokenCache::default();
    cache.insert(&token, &holder, SystemTime::now());
    let mut raw = raw_signature_check(&keys.ec, &token);
    row(
        "repeated ES256 token (cache)",
        args,
        || cache.get(&token, SystemTime::now()).is_some(),
        &mut raw,
        Goal::None,
    );

    let junk = "eyJhbGciOiJub25lIn0.e30.";
    let refuse = || {
        validator
            .validate(junk, &issuers, SystemTime::now())
            .is_err()
    };
    row(
        "junk token refused (vs ES256 check)",
        args,
        refuse,
        &mut raw,
        Goal::AtLeast(JUNK_GOAL),
    );
    Ok(())
}

enum Goal {
    AtLeast(f64),
    None,
}

/// Measures `case` and `baseline` alternately, `runs` times, and prints their ratio.
fn row(
    name: &str,
    args: &Args,
    mut case: impl FnMut() -> bool,
    baseline: &mut impl FnMut() -> bool,
    goal: Goal,
) {
    let (mut rates, mut baselines, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let base = rate(&mut *baseline);
        let measured = rate(&mut case);
        baselines.push(base);
        rates.push(measured);
        ratios.push(measured / base);
    }
    let ratio = median(&ratios);
    let (low, high) = spread(&ratios);
    let goal = match goal {
        Goal::AtLeast(goal) if ratio >= goal => format!(">= {goal}x: met"),
        Goal::AtLeast(goal) => format!(">= {goal}x: MISSED"),
        Goal::None => "-".into(),
    };
    println!(
        "| {name} | {:.0} | {:.0} | {ratio:.2}x ({low:.2}-{high:.2}) | {goal} |",
        median(&rates),
        median(&baselines)
    );
}

/// Calls per second of `check`, after a warm-up, over at least [`MEASURE`].
fn rate(mut check: impl FnMut() -> bool) -> f64 {
    for _ in 0..BATCH {
        assert!(check(), "the benchmarked call must succeed");
    }
    let (started, mut calls) = (Instant::now(), 0u64);
    while started.elapsed() < MEASURE {
        for _ in 0..BATCH {
            assert!(check(), "the benchmarked call must succeed");
        }
        calls += u64::from(BATCH);
    }
    calls as f64 / started.elapsed().as_secs_f64()
}
