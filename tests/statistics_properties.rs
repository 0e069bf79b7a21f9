//! Property tests of the exact operations on the statistics (PAPER.md §1): forgetting B after
//! learning A ∪ B equals learning A; decay with μ = 1 equals no decay; merging states is
//! commutative and associative (and equals learning the union).

use fastretrain::solver::{GramRecord, GramStats};
use proptest::prelude::*;

const DIM: usize = 4;
const LABELS: [&str; 4] = ["cat", "dog", "owl", "ant"];

type Sample = (Vec<f32>, usize);

fn samples(max: usize) -> impl Strategy<Value = Vec<Sample>> {
    prop::collection::vec(
        (prop::collection::vec(-4.0f32..4.0, DIM), 0..LABELS.len()),
        1..max,
    )
}

/// Streams `data` in batches of `batch` rows; μ is applied before each batch when given.
fn learn_into(stats: &mut GramStats, data: &[Sample], batch: usize, decay: Option<f64>) {
    for chunk in data.chunks(batch.max(1)) {
        let feats: Vec<f32> = chunk.iter().flat_map(|(f, _)| f.clone()).collect();
        let ids: Vec<usize> = chunk
            .iter()
            .map(|(_, l)| stats.label_index(LABELS[*l]))
            .collect();
        if let Some(mu) = decay {
            stats.decay(mu).unwrap();
        }
        stats.accumulate(&feats, &ids, "test").unwrap();
    }
}

fn learn(data: &[Sample], batch: usize) -> GramStats {
    let mut stats = GramStats::new(DIM);
    learn_into(&mut stats, data, batch, None);
    stats
}

fn forget(stats: &mut GramStats, data: &[Sample], batch: usize) {
    for chunk in data.chunks(batch.max(1)) {
        let feats: Vec<f32> = chunk.iter().flat_map(|(f, _)| f.clone()).collect();
        let ids: Vec<usize> = chunk
            .iter()
            .map(|(_, l)| stats.labels().iter().position(|k| k == LABELS[*l]).unwrap())
            .collect();
        stats.forget(&feats, &ids, "test").unwrap();
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Equal up to 1e-9 (relative), with columns matched by label name (merge order may differ).
fn assert_same(a: &GramStats, b: &GramStats) -> Result<(), TestCaseError> {
    let (ra, rb): (GramRecord, GramRecord) = (a.to_record(), b.to_record());
    let mut la = ra.labels.clone();
    let mut lb = rb.labels.clone();
    la.sort();
    lb.sort();
    prop_assert_eq!(la, lb, "label sets");
    prop_assert!(
        close(ra.samples, rb.samples),
        "samples {} vs {}",
        ra.samples,
        rb.samples
    );
    prop_assert!(
        close(ra.target_sq, rb.target_sq),
        "Σ‖t‖² {} vs {}",
        ra.target_sq,
        rb.target_sq
    );
    for (x, y) in ra.gram_lower.iter().zip(&rb.gram_lower) {
        prop_assert!(close(*x, *y), "G {x} vs {y}");
    }
    let p = DIM + 1;
    for (i, label) in ra.labels.iter().enumerate() {
        let j = rb.labels.iter().position(|l| l == label).unwrap();
        prop_assert!(close(ra.class_counts[i], rb.class_counts[j]));
        for r in 0..p {
            let (x, y) = (ra.cross[i * p + r], rb.cross[j * p + r]);
            prop_assert!(close(x, y), "B[{label}] {x} vs {y}");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn forgetting_b_after_learning_a_and_b_equals_learning_a(
        a in samples(40), b in samples(40), batch in 1usize..17, interleave in any::<bool>()
    ) {
        let union: Vec<Sample> = if interleave {
            // B's samples spread between A's: forgetting does not depend on the order.
            let mut u = Vec::new();
            let (mut ia, mut ib) = (a.iter(), b.iter());
            loop {
                match (ia.next(), ib.next()) {
                    (None, None) => break,
                    (x, y) => u.extend(x.into_iter().chain(y).cloned()),
                }
            }
            u
        } else {
            a.iter().chain(&b).cloned().collect()
        };
        let mut stats = learn(&union, batch);
        forget(&mut stats, &b, batch + 3);
        assert_same(&stats, &learn(&a, batch))?;
    }

    #[test]
    fn decay_with_mu_one_equals_no_decay(data in samples(60), batch in 1usize..17) {
        let mut decayed = GramStats::new(DIM);
        learn_into(&mut decayed, &data, batch, Some(1.0));
        prop_assert_eq!(decayed, learn(&data, batch));
    }

    #[test]
    fn decay_weighs_each_batch_by_mu_to_its_age(data in samples(40), mu in 0.05f64..1.0) {
        // Batches of one sample: sample i of n is weighed μ^(n−1−i).
        let mut decayed = GramStats::new(DIM);
        learn_into(&mut decayed, &data, 1, Some(mu));
        let n = data.len();
        let r = decayed.to_record();
        let expected_samples: f64 = (0..n).map(|i| mu.powi((n - 1 - i) as i32)).sum();
        prop_assert!(close(r.samples, expected_samples));
        // The bias corner of G is Σ weights too.
        prop_assert!(close(*r.gram_lower.last().unwrap(), expected_samples));
    }

    #[test]
    fn merge_is_commutative_and_associative_and_equals_the_union(
        a in samples(30), b in samples(30), c in samples(30), batch in 1usize..9
    ) {
        let (sa, sb, sc) = (learn(&a, batch), learn(&b, batch), learn(&c, batch));
        let mut ab = sa.clone();
        ab.merge(&sb).unwrap();
        let mut ba = sb.clone();
        ba.merge(&sa).unwrap();
        assert_same(&ab, &ba)?;

        let mut ab_c = ab.clone();
        ab_c.merge(&sc).unwrap();
        let mut bc = sb.clone();
        bc.merge(&sc).unwrap();
        let mut a_bc = sa.clone();
        a_bc.merge(&bc).unwrap();
        assert_same(&ab_c, &a_bc)?;

        let union: Vec<Sample> = a.iter().chain(&b).chain(&c).cloned().collect();
        assert_same(&ab_c, &learn(&union, batch))?;
    }
}

#[test]
fn forgetting_more_than_was_learned_is_refused_and_changes_nothing() {
    let data: Vec<Sample> = vec![(vec![1.0, 2.0, 3.0, 4.0], 0), (vec![0.5; 4], 1)];
    let mut stats = learn(&data, 2);
    let before = stats.clone();
    let twice = [data[0].clone(), data[0].clone()];
    let feats: Vec<f32> = twice.iter().flat_map(|(f, _)| f.clone()).collect();
    let err = stats.forget(&feats, &[0, 0], "test").unwrap_err();
    assert!(err.to_string().contains("cannot forget"), "{err}");
    assert_eq!(stats, before);
    let mut nan = feats.clone();
    nan[1] = f32::NAN;
    assert!(stats.forget(&nan[..4], &[0], "test").is_err());
    assert_eq!(stats, before);
}
