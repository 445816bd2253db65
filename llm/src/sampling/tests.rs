//! Tests of the sampler chain (params, stop strings and the RNG test themselves in their own files).

use std::time::Instant;

use super::rng::Rng;
use super::*;

fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut p = SamplingParams {
        seed: Some(1),
        ..SamplingParams::openai()
    };
    f(&mut p);
    p
}

fn sampler(vocab: usize, f: impl FnOnce(&mut SamplingParams)) -> Sampler {
    Sampler::new(params(f), vocab).unwrap()
}

/// Logits whose softmax is exactly `probs` (up to rounding).
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

/// Deterministic pseudo-random logits, roughly uniform in [-scale, scale].
fn random_logits(vocab: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..vocab)
        .map(|_| (r.next_f64() as f32 * 2.0 - 1.0) * scale)
        .collect()
}

fn empty() -> SamplingContext {
    SamplingContext::new(&[])
}

fn argmax_ref(l: &[f32]) -> u32 {
    // First maximum, like torch.argmax.
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    l.iter().position(|&x| x == max).unwrap() as u32
}

/// Reference top_k + top_p with a full sort, to check the selection-based implementation.
fn truncate_ref(l: &[f32], top_k: usize, top_p: f64) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..l.len() as u32).collect();
    ids.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b)));
    if top_k > 0 {
        ids.truncate(top_k);
    }
    let max = l[ids[0] as usize] as f64;
    let w: Vec<f64> = ids
        .iter()
        .map(|&i| (l[i as usize] as f64 - max).exp())
        .collect();
    let z: f64 = w.iter().sum();
    let mut cum = 0.0;
    let mut keep = ids.len();
    for (n, wi) in w.iter().enumerate() {
        cum += wi;
        if cum >= top_p * z {
            keep = n + 1;
            break;
        }
    }
    ids.truncate(keep);
    ids.sort_unstable();
    ids
}

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    let mut s = sampler(6, |p| p.temperature = 0.0);
    assert_eq!(
        s.sample(&[1.0, 3.0, 0.5, 3.0, 2.0, 3.0], &empty())
            .unwrap()
            .id,
        1
    );
    assert_eq!(
        s.sample(&[-5.0, -4.0, -4.0, -7.0, -9.0, -4.5], &empty())
            .unwrap()
            .id,
        1
    );
    assert_eq!(s.sample(&[2.0; 6], &empty()).unwrap().id, 0);
    for seed in 0..20 {
        let l = random_logits(6, seed, 4.0);
        assert_eq!(s.sample(&l, &empty()).unwrap().id, argmax_ref(&l));
    }
}

#[test]
fn top_k_1_is_greedy_at_any_temperature() {
    for (t, seed) in [(0.5, 1), (1.0, 2), (5.0, 3), (100.0, 4)] {
        let mut s = sampler(50, |p| {
            p.temperature = t;
            p.top_k = 1;
            p.seed = Some(seed);
        });
        for row in 0..20 {
            let mut l = random_logits(50, row, 2.0);
            if row % 2 == 0 {
                // A tie for the max: still the lowest id.
                let m = argmax_ref(&l) as usize;
                l[(m + 7) % 50] = l[m];
            }
            assert_eq!(
                s.sample(&l, &empty()).unwrap().id,
                argmax_ref(&l),
                "t={t} row={row}"
            );
        }
    }
}

#[test]
fn top_p_keeps_the_smallest_set_with_mass_at_least_p() {
    let l = logits_of(&[0.15, 0.5, 0.05, 0.3]);
    let surv = |p: f32| sampler(4, |q| q.top_p = p).survivors(&l, &empty()).unwrap();
    assert_eq!(surv(0.4), vec![1]);
    assert_eq!(surv(0.75), vec![1, 3]);
    assert_eq!(surv(0.9), vec![0, 1, 3]);
    assert_eq!(surv(0.99), vec![0, 1, 2, 3]);
    assert_eq!(
        surv(0.0),
        vec![1],
        "top_p = 0 still keeps the most likely token"
    );
    // Sampling only ever returns survivors.
    let mut s = sampler(4, |q| q.top_p = 0.75);
    let mut seen = [0u32; 4];
    for _ in 0..2000 {
        seen[s.sample(&l, &empty()).unwrap().id as usize] += 1;
    }
    assert_eq!((seen[0], seen[2]), (0, 0));
    assert!(seen[1] > 0 && seen[3] > 0);
}

#[test]
fn top_p_applies_to_top_k_survivors_renormalised_and_ignores_temperature() {
    let l = logits_of(&[0.4, 0.3, 0.2, 0.1]);
    // After top_k = 2 the first token has 4/7 > 0.5 of the mass: alone it is enough.
    let s = sampler(4, |p| {
        p.top_k = 2;
        p.top_p = 0.5
    })
    .survivors(&l, &empty())
    .unwrap();
    assert_eq!(s, vec![0]);
    // Truncation sees temperature-1 probabilities: a high temperature does not widen top_p.
    let l = logits_of(&[0.6, 0.3, 0.1]);
    for t in [0.1, 1.0, 10.0] {
        let s = sampler(3, |p| {
            p.top_p = 0.85;
            p.temperature = t
        })
        .survivors(&l, &empty())
        .unwrap();
        assert_eq!(s, vec![0, 1], "temperature {t}");
    }
}

#[test]
fn top_k_and_top_p_match_a_full_sort_reference() {
    // Flat logits so top_p needs far more than the first 256-token prefix.
    let vocab = 5000;
    for seed in 0..4 {
        let l = random_logits(vocab, seed, 1.5);
        for (k, p) in [
            (0, 0.1),
            (0, 0.5),
            (0, 0.95),
            (0, 0.999),
            (40, 1.0),
            (40, 0.9),
            (3000, 0.7),
            (1, 0.5),
        ] {
            let got = sampler(vocab, |q| {
                q.top_k = k;
                q.top_p = p
            })
            .survivors(&l, &empty())
            .unwrap();
            assert_eq!(
                got,
                truncate_ref(&l, k, p as f64),
                "seed {seed} k {k} p {p}"
            );
        }
    }
}

#[test]
fn min_p_is_relative_to_the_most_likely_token() {
    let l = logits_of(&[0.06, 0.5, 0.1, 0.3, 0.04]);
    let surv = |m: f32| sampler(5, |q| q.min_p = m).survivors(&l, &empty()).unwrap();
    // 0.15 * 0.5 = 0.075: keeps 0.5, 0.3, 0.1 (an absolute 0.15 would drop 0.1).
    assert_eq!(surv(0.15), vec![1, 2, 3]);
    // 0.1 * 0.5 = 0.05: keeps 0.06 too.
    assert_eq!(surv(0.1), vec![0, 1, 2, 3]);
    assert_eq!(surv(1.0), vec![1]);
    assert_eq!(surv(0.0), vec![0, 1, 2, 3, 4]);
}

/// Pearson's chi-square of observed counts against probabilities.
fn chi_square(counts: &[u32], probs: &[f64]) -> f64 {
    let n: u32 = counts.iter().sum();
    counts
        .iter()
        .zip(probs)
        .map(|(&c, &p)| (c as f64 - n as f64 * p).powi(2) / (n as f64 * p))
        .sum()
}

fn softmax(l: &[f32], t: f64) -> Vec<f64> {
    let w: Vec<f64> = l.iter().map(|&x| (x as f64 / t).exp()).collect();
    let z: f64 = w.iter().sum();
    w.iter().map(|x| x / z).collect()
}

#[test]
fn temperature_reshapes_the_empirical_distribution() {
    let l = [2.0f32, 1.0, 0.0, -1.0];
    let draws = 20_000;
    for t in [0.5, 1.0, 2.0] {
        let mut s = sampler(4, |p| {
            p.temperature = t as f32;
            p.seed = Some(99)
        });
        let mut counts = [0u32; 4];
        for _ in 0..draws {
            counts[s.sample(&l, &empty()).unwrap().id as usize] += 1;
        }
        // 3 degrees of freedom: 16.27 is the 0.1% tail.
        let fit = chi_square(&counts, &softmax(&l, t));
        assert!(fit < 16.27, "t={t}: chi2 {fit} for {counts:?}");
        // And it is not the distribution of another temperature, so a temperature that was ignored
        // (or applied twice) would fail.
        for other in [0.5, 1.0, 2.0].into_iter().filter(|&o| o != t) {
            let misfit = chi_square(&counts, &softmax(&l, other));
            assert!(misfit > 100.0, "t={t} vs {other}: chi2 {misfit}");
        }
    }
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let vocab = 1000;
    let run = |seed: Option<u64>| {
        let mut s = Sampler::new(
            SamplingParams {
                seed,
                ..SamplingParams::default()
            },
            vocab,
        )
        .unwrap();
        let mut ctx = SamplingContext::new(&[1, 2, 3]);
        let mut out = Vec::new();
        for row in 0..50 {
            let id = s.sample(&random_logits(vocab, row, 3.0), &ctx).unwrap().id;
            ctx.push(id);
            out.push(id);
        }
        (out, s.seed())
    };
    let (a, _) = run(Some(7));
    assert_eq!(a, run(Some(7)).0);
    assert_ne!(a, run(Some(8)).0);
    // seed None: a random seed, reported, and reusing it repeats the run.
    let (r, seed) = run(None);
    assert_eq!(r, run(Some(seed)).0);
    let s = Sampler::new(
        SamplingParams {
            seed: None,
            ..Default::default()
        },
        10,
    )
    .unwrap();
    assert_eq!(s.params().seed, Some(s.seed()));
}

#[test]
fn seeded_stream_is_pinned() {
    // A golden sequence, reproduced independently by a Python transcription of the generator and
    // the draw: any change that would change users' seeded outputs shows up here.
    let mut s = Sampler::new(
        SamplingParams {
            seed: Some(2024),
            ..SamplingParams::openai()
        },
        16,
    )
    .unwrap();
    let l = random_logits(16, 5, 1.0);
    let ids: Vec<u32> = (0..12)
        .map(|_| s.sample(&l, &empty()).unwrap().id)
        .collect();
    assert_eq!(ids, GOLDEN_IDS);
}
const GOLDEN_IDS: [u32; 12] = [1, 13, 1, 3, 13, 4, 6, 4, 9, 1, 11, 15];

#[test]
fn penalties_change_exactly_the_right_logits_by_the_right_amounts() {
    let l = [2.0f32, -2.0, 1.0, 0.5, -1.0, 3.0, 0.0, 4.0];
    let mut ctx = SamplingContext::new(&[0, 1, 5]);
    for id in [2, 2, 3] {
        ctx.push(id);
    }
    let mut s = sampler(8, |p| {
        p.repetition_penalty = 2.0;
        p.repeat_last_n = 5; // window [1, 5, 2, 2, 3]: token 0 is outside it
        p.frequency_penalty = 0.5;
        p.presence_penalty = 0.25;
        p.logit_bias = [(1, 3.0), (6, 1.5), (7, -100.0)].into();
    });
    let got = s.adjusted(&l, &ctx).unwrap();
    let want = [
        2.0,                          // outside the window, never generated
        (-2.0 + 3.0) / 2.0,           // bias first (now positive), then divided
        1.0 / 2.0 - 2.0 * 0.5 - 0.25, // once despite appearing twice; generated twice
        0.5 / 2.0 - 0.5 - 0.25,       // generated once
        -1.0,                         // untouched
        3.0 / 2.0,                    // prompt token in the window: repetition only
        1.5,                          // bias only
        f32::NEG_INFINITY,            // banned
    ];
    assert_eq!(got, want);

    // Negative logits are multiplied, and penalties off means untouched.
    let mut s = sampler(3, |p| {
        p.repetition_penalty = 1.5;
        p.repeat_last_n = 64
    });
    assert_eq!(
        s.adjusted(&[-2.0, 3.0, 1.0], &SamplingContext::new(&[0, 1]))
            .unwrap(),
        [-3.0, 2.0, 1.0]
    );
    let mut s = sampler(3, |_| {});
    assert_eq!(
        s.adjusted(&[-2.0, 3.0, 1.0], &ctx_gen(&[0, 1, 1])).unwrap(),
        [-2.0, 3.0, 1.0]
    );
    // repeat_last_n = 0 turns the repetition penalty off.
    let mut s = sampler(3, |p| {
        p.repetition_penalty = 1.5;
        p.repeat_last_n = 0
    });
    assert_eq!(
        s.adjusted(&[-2.0, 3.0, 1.0], &ctx_gen(&[0, 1])).unwrap(),
        [-2.0, 3.0, 1.0]
    );
}

fn ctx_gen(generated: &[u32]) -> SamplingContext {
    let mut c = SamplingContext::new(&[]);
    for &id in generated {
        c.push(id);
    }
    c
}

#[test]
fn context_ids_outside_the_vocab_are_an_error() {
    let mut s = sampler(4, |p| p.frequency_penalty = 1.0);
    let err = s.sample(&[0.0; 4], &ctx_gen(&[9])).unwrap_err();
    assert_eq!(
        err,
        SamplingError::TokenOutOfVocab {
            what: "context",
            id: 9,
            vocab_size: 4
        }
    );
}

#[test]
fn logit_bias_minus_100_bans_a_token() {
    // Token 2 leads by 150 nats: adding -100 would leave it the favourite; the ban removes it.
    let l = [0.0f32, 1.0, 150.0, 0.5];
    let mut g = sampler(4, |p| {
        p.temperature = 0.0;
        p.logit_bias = [(2, -100.0)].into()
    });
    assert_eq!(g.sample(&l, &empty()).unwrap().id, 1);
    let mut s = sampler(4, |p| {
        p.temperature = 2.0;
        p.top_logprobs = 4;
        p.logit_bias = [(2, -100.0)].into()
    });
    for _ in 0..1000 {
        let out = s.sample(&l, &empty()).unwrap();
        assert_ne!(out.id, 2);
        assert!(
            out.top_logprobs.iter().all(|&(id, _)| id != 2),
            "banned tokens are not listed"
        );
        assert_eq!(out.top_logprobs.len(), 3);
    }
    // A large positive bias makes a token all but certain.
    let mut s = sampler(4, |p| p.logit_bias = [(0, 100.0)].into());
    let l = [0.0f32, 1.0, 5.0, 0.5];
    assert!((0..200).all(|_| s.sample(&l, &empty()).unwrap().id == 0));
    // Banning everything is an error, not a panic.
    let mut s = sampler(2, |p| p.logit_bias = [(0, -100.0), (1, -100.0)].into());
    assert_eq!(
        s.sample(&[1.0, 2.0], &empty()).unwrap_err(),
        SamplingError::AllTokensBanned
    );
}

#[test]
fn logprobs_are_the_untruncated_distribution_and_sum_to_one() {
    let vocab = 16;
    let l = random_logits(vocab, 3, 4.0);
    let all = |f: &dyn Fn(&mut SamplingParams)| {
        let mut s = sampler(vocab, |p| {
            p.top_logprobs = vocab;
            f(p)
        });
        s.sample(&l, &empty()).unwrap()
    };
    let out = all(&|_| {});
    assert_eq!(out.top_logprobs.len(), vocab);
    let total: f64 = out
        .top_logprobs
        .iter()
        .map(|&(_, lp)| (lp as f64).exp())
        .sum();
    assert!((total - 1.0).abs() < 1e-5, "sum of probabilities {total}");
    assert!(
        out.top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1),
        "most likely first"
    );
    assert_eq!(out.top_logprobs[0].0, argmax_ref(&l));
    let chosen = out
        .top_logprobs
        .iter()
        .find(|&&(id, _)| id == out.id)
        .unwrap();
    assert_eq!(Some(chosen.1), out.logprob);
    // Temperature and truncation do not change what is reported.
    let other = all(&|p| {
        p.temperature = 0.3;
        p.top_k = 2;
        p.min_p = 0.5
    });
    assert_eq!(other.top_logprobs, out.top_logprobs);
    let greedy = all(&|p| p.temperature = 0.0);
    assert_eq!(greedy.top_logprobs, out.top_logprobs);
    // Bias and penalties do: they shape the reported distribution.
    let biased = all(&|p| p.logit_bias = [(0, 5.0)].into());
    assert_ne!(biased.top_logprobs, out.top_logprobs);
    // Fewer asked, the head of the same list; none asked, none given.
    assert_eq!(
        all(&|p| p.top_logprobs = 3).top_logprobs,
        out.top_logprobs[..3]
    );
    assert!(all(&|p| p.top_logprobs = 0).top_logprobs.is_empty());
    // The chosen token's alone: with `logprobs`, or not at all.
    let only = all(&|p| {
        p.top_logprobs = 0;
        p.logprobs = true
    });
    assert_eq!((only.id, only.logprob), (out.id, out.logprob));
    assert!(only.top_logprobs.is_empty());
    assert_eq!(all(&|p| p.top_logprobs = 0).logprob, None);
}

#[test]
fn top_logprobs_ties_list_lowest_id_first() {
    let mut s = sampler(5, |p| p.top_logprobs = 3);
    let ids: Vec<u32> = s
        .sample(&[1.0, 2.0, 1.0, 2.0, 1.0], &empty())
        .unwrap()
        .top_logprobs
        .iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(ids, [1, 3, 0]);
}

/// A grammar's mask writes -inf: those tokens are never chosen, greedy or sampled, and the
/// others' probabilities are renormalised among themselves.
#[test]
fn minus_infinity_logits_are_banned_tokens() {
    let mut l = vec![f32::NEG_INFINITY; 8];
    l[2] = -3.0;
    l[6] = -3.0;
    let mut greedy = sampler(8, |p| p.temperature = 0.0);
    assert_eq!(greedy.sample(&l, &empty()).unwrap().id, 2);
    let mut s = sampler(8, |p| {
        p.temperature = 1.0;
        p.seed = Some(3);
        p.logprobs = true;
    });
    for _ in 0..50 {
        let out = s.sample(&l, &empty()).unwrap();
        assert!(out.id == 2 || out.id == 6, "{}", out.id);
        assert!((out.logprob.unwrap() - 0.5f64.ln() as f32).abs() < 1e-5);
    }
    let err = s.sample(&[f32::NEG_INFINITY; 8], &empty()).unwrap_err();
    assert_eq!(err, SamplingError::AllTokensBanned);
}

#[test]
fn non_finite_logits_and_wrong_lengths_are_errors_naming_the_position() {
    let mut s = sampler(6, |_| {});
    for (pos, bad) in [(3, f32::NAN), (5, f32::INFINITY), (0, f32::NAN)] {
        let mut l = vec![0.5f32; 6];
        l[pos] = bad;
        let err = s.sample(&l, &empty()).unwrap_err();
        assert!(
            matches!(err, SamplingError::NonFiniteLogit { index, .. } if index == pos),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&format!("position {pos}")),
            "{err}"
        );
    }
    let err = s.sample(&[0.0; 5], &empty()).unwrap_err();
    assert_eq!(
        err,
        SamplingError::LogitsLength {
            expected: 6,
            got: 5
        }
    );
    assert!(Sampler::new(SamplingParams::default(), 0).is_err());
    let bad = SamplingParams {
        top_p: 2.0,
        ..Default::default()
    };
    let err = Sampler::new(bad, 10).unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}

#[test]
fn handles_a_131k_vocabulary_quickly() {
    let vocab = 131_072;
    let l = random_logits(vocab, 11, 8.0);
    let cases: [(&str, SamplingParams); 4] = [
        (
            "llama.cpp defaults",
            SamplingParams {
                seed: Some(1),
                ..Default::default()
            },
        ),
        (
            "openai (no truncation)",
            SamplingParams {
                seed: Some(1),
                top_logprobs: 20,
                ..SamplingParams::openai()
            },
        ),
        (
            "top_p 0.9 alone",
            SamplingParams {
                seed: Some(1),
                top_p: 0.9,
                ..SamplingParams::openai()
            },
        ),
        (
            "greedy",
            SamplingParams {
                seed: Some(1),
                ..SamplingParams::greedy()
            },
        ),
    ];
    let mut ctx = SamplingContext::new(&(0..512).collect::<Vec<u32>>());
    for (name, p) in cases {
        let p = SamplingParams {
            repetition_penalty: 1.1,
            frequency_penalty: 0.2,
            ..p
        };
        let mut s = Sampler::new(p, vocab).unwrap();
        let start = Instant::now();
        let tokens = 20;
        for _ in 0..tokens {
            let id = s.sample(&l, &ctx).unwrap().id;
            assert!((id as usize) < vocab);
            ctx.push(id);
        }
        let per_token = start.elapsed() / tokens;
        eprintln!("131072 vocab, {name}: {per_token:?} per token");
        // Generous for a loaded debug build; a full sort per token or quadratic work would blow it.
        assert!(
            per_token.as_millis() < 100,
            "{name}: {per_token:?} per token"
        );
    }
    // top_k still exact at this size.
    let mut s = Sampler::new(
        SamplingParams {
            top_k: 1,
            temperature: 3.0,
            ..Default::default()
        },
        vocab,
    )
    .unwrap();
    assert_eq!(s.sample(&l, &empty()).unwrap().id, argmax_ref(&l));
}

#[test]
fn finish_reason_names_match_openai() {
    assert_eq!(FinishReason::Stop.as_str(), "stop");
    assert_eq!(
        serde_json::to_string(&FinishReason::Length).unwrap(),
        "\"length\""
    );
}
