//! The streamed Gram solver equals NumPy's ridge on the full matrix (reference:
//! scripts/reference/make_test_vectors.py, onnxruntime features of the 2,000 shipped training images).

use crate::common;

use fastretrain::head::Head;
use fastretrain::solver::{GramStats, default_lambda_grid};
use ndarray::{Array2, ShapeBuilder};

struct Reference {
    features: Vec<f32>,
    labels: Vec<usize>,
    dim: usize,
    json: serde_json::Value,
}

fn reference() -> Reference {
    let (features, labels, dim, json) = common::fashion_features();
    Reference {
        features,
        labels,
        dim,
        json,
    }
}

/// Learns rows `range` in chunks of at most `chunk` rows; labels "0".."9" in numeric order.
fn learn(r: &Reference, range: std::ops::Range<usize>, chunk: usize) -> GramStats {
    let mut stats = GramStats::new(r.dim);
    for k in 0..10 {
        stats.label_index(&k.to_string());
    }
    let mut start = range.start;
    while start < range.end {
        let end = (start + chunk).min(range.end);
        stats
            .accumulate(
                &r.features[start * r.dim..end * r.dim],
                &r.labels[start..end],
                "reference",
            )
            .unwrap();
        start = end;
    }
    stats
}

/// Row-major (d+1) × c, as NumPy's `ravel()` writes it.
fn row_major(w: faer::MatRef<'_, f64>) -> Vec<f64> {
    (0..w.nrows())
        .flat_map(|i| (0..w.ncols()).map(move |j| w[(i, j)]))
        .collect()
}

#[test]
fn streamed_solution_equals_numpy_ridge() {
    let r = reference();
    let stats = learn(&r, 0..r.labels.len(), 64);
    let w1 = row_major(stats.solve(1.0).unwrap().as_ref());
    let err = common::relative_error(&w1, &common::f64s(&r.json["weights_lambda_1"]));
    assert!(err < 1e-6, "λ = 1: relative error {err}");
    let lambda = r.json["gcv_lambda"].as_f64().unwrap();
    let w = row_major(stats.solve(lambda).unwrap().as_ref());
    let err = common::relative_error(&w, &common::f64s(&r.json["weights_gcv"]));
    assert!(err < 1e-6, "GCV λ: relative error {err}");
}

/// Rows given as a column-major ndarray (as a Fortran-ordered NumPy array arrives) with their
/// labels by name give NumPy's ridge too; the head built from NumPy's weights through ndarray
/// scores rows as NumPy's `[x, 1] · W` does.
#[test]
fn rows_from_ndarray_views_equal_numpy_ridge_and_scores() {
    let r = reference();
    let n = r.labels.len();
    let column_major = Array2::from_shape_fn((n, r.dim).f(), |(i, j)| r.features[i * r.dim + j]);
    assert!(
        column_major.as_slice().is_none(),
        "the view is not row major"
    );
    let names: Vec<String> = r.labels.iter().map(|l| l.to_string()).collect();
    let mut stats = GramStats::new(r.dim);
    for k in 0..10 {
        stats.label_index(&k.to_string());
    }
    // Two batches, the second split off the same view.
    let half = n / 2;
    stats
        .learn_rows(column_major.slice(ndarray::s![..half, ..]), &names[..half])
        .unwrap();
    stats
        .learn_rows(column_major.slice(ndarray::s![half.., ..]), &names[half..])
        .unwrap();
    let w = row_major(stats.solve(1.0).unwrap().as_ref());
    let numpy = common::f64s(&r.json["weights_lambda_1"]);
    let err = common::relative_error(&w, &numpy);
    assert!(err < 1e-6, "λ = 1 from ndarray rows: relative error {err}");

    // A batch with one NaN changes nothing, not even the labels.
    let mut bad = column_major.slice(ndarray::s![..4, ..]).to_owned();
    bad[(2, 5)] = f32::NAN;
    let before = stats.clone();
    let new_labels = ["new", "new", "new", "new"];
    assert!(stats.learn_rows(bad.view(), &new_labels).is_err());
    assert_eq!(stats, before);

    let labels: Vec<String> = (0..10).map(|k| k.to_string()).collect();
    let weights = Array2::from_shape_vec((r.dim + 1, 10), numpy.clone()).unwrap();
    let head = Head::from_weights(weights.view(), r.dim, labels, 1.0, n as f64).unwrap();
    assert_eq!(head.weights_matrix().shape(), (r.dim + 1, 10));
    for row in [0, 17, n - 1] {
        let x = &r.features[row * r.dim..(row + 1) * r.dim];
        let scores = head.scores(x).unwrap();
        for (c, score) in scores.iter().enumerate() {
            let expected: f64 = numpy[r.dim * 10 + c]
                + x.iter()
                    .enumerate()
                    .map(|(i, &v)| v as f64 * numpy[i * 10 + c])
                    .sum::<f64>();
            assert!((score - expected).abs() <= 1e-9 * expected.abs().max(1.0));
        }
    }
    // Weights of the wrong shape or duplicated labels are refused.
    let twice = vec!["a".to_string(), "a".to_string()];
    assert!(Head::from_weights(weights.view(), r.dim, twice, 1.0, 0.0).is_err());
    assert!(
        Head::from_weights(
            weights.view(),
            r.dim + 1,
            (0..10).map(|k| k.to_string()).collect(),
            1.0,
            0.0
        )
        .is_err()
    );
}

#[test]
fn gcv_matches_numpy_and_picks_the_same_lambda() {
    let r = reference();
    let stats = learn(&r, 0..r.labels.len(), 64);
    let grid = default_lambda_grid();
    let expected_grid = common::f64s(&r.json["lambda_grid"]);
    assert_eq!(grid.len(), expected_grid.len());
    for (a, b) in grid.iter().zip(&expected_grid) {
        assert!((a - b).abs() <= 1e-12 * b);
    }
    let search = stats.gcv(&grid).unwrap();
    let expected = common::f64s(&r.json["gcv_scores"]);
    for (lambda, (a, b)) in grid.iter().zip(search.gcv.iter().zip(&expected)) {
        assert!(
            ((a - b) / b).abs() < 1e-6,
            "GCV at λ = {lambda}: {a} vs NumPy {b}"
        );
    }
    assert_eq!(search.best, r.json["gcv_lambda"].as_f64().unwrap());
}

#[test]
fn seven_chunks_equal_one_batch() {
    let r = reference();
    let n = r.labels.len();
    let once = learn(&r, 0..n, n);
    let chunked = learn(&r, 0..n, n.div_ceil(7));
    let a = row_major(once.solve(1.0).unwrap().as_ref());
    let b = row_major(chunked.solve(1.0).unwrap().as_ref());
    let err = common::relative_error(&b, &a);
    assert!(err < 1e-9, "relative error {err}");
}

#[test]
fn merged_halves_equal_the_union() {
    let r = reference();
    let n = r.labels.len();
    let union = learn(&r, 0..n, 64);
    let mut first = learn(&r, 0..n / 2, 64);
    let second = learn(&r, n / 2..n, 64);
    first.merge(&second).unwrap();
    let a = row_major(union.solve(1.0).unwrap().as_ref());
    let b = row_major(first.solve(1.0).unwrap().as_ref());
    let err = common::relative_error(&b, &a);
    assert!(err < 1e-9, "relative error {err}");
    assert_eq!(first.samples(), union.samples());
    assert_eq!(first.class_counts(), union.class_counts());
}

#[test]
fn merge_with_disjoint_labels_equals_streaming_both() {
    // Device A saw only labels < 5, device B only labels ≥ 5: merging must equal one
    // device that saw everything.
    let r = reference();
    let (mut a_rows, mut b_rows) = (Vec::new(), Vec::new());
    for i in 0..600 {
        if r.labels[i] < 5 {
            a_rows.push(i)
        } else {
            b_rows.push(i)
        }
    }
    let collect = |rows: &[usize]| -> (Vec<f32>, Vec<String>) {
        let f = rows
            .iter()
            .flat_map(|&i| r.features[i * r.dim..(i + 1) * r.dim].iter().copied())
            .collect();
        (f, rows.iter().map(|&i| r.labels[i].to_string()).collect())
    };
    let learn_rows = |stats: &mut GramStats, rows: &[usize]| {
        let (f, l) = collect(rows);
        let idx: Vec<usize> = l.iter().map(|l| stats.label_index(l)).collect();
        stats.accumulate(&f, &idx, "t").unwrap();
    };
    let mut a = GramStats::new(r.dim);
    learn_rows(&mut a, &a_rows);
    let mut b = GramStats::new(r.dim);
    learn_rows(&mut b, &b_rows);
    let mut both = GramStats::new(r.dim);
    learn_rows(&mut both, &a_rows);
    learn_rows(&mut both, &b_rows);
    a.merge(&b).unwrap();
    assert_eq!(a.labels(), both.labels());
    let x = row_major(a.solve(10.0).unwrap().as_ref());
    let y = row_major(both.solve(10.0).unwrap().as_ref());
    assert!(common::relative_error(&x, &y) < 1e-9);
}

#[test]
fn k_fold_cross_validation_equals_refitting_on_the_rows() {
    // scripts/reference/make_recipe_vectors.py: np.linalg.solve on the other folds' rows, scored on the
    // held-out rows; here the same numbers from fold statistics alone.
    let reference = common::json("recipe_reference.json")["kfold"].clone();
    let (features, labels, dim, _) = common::fashion_features();
    let set = fastretrain::store::FeatureSet {
        dim,
        labels: (0..10).map(|i| i.to_string()).collect(),
        features,
        label_ids: labels,
    };
    let folds = reference["folds"].as_u64().unwrap() as usize;
    let grid = common::f64s(&reference["grid"]);
    let cv = fastretrain::fitting::cross_validate(&set, folds, &grid, 64).unwrap();
    assert_eq!(cv.fold_samples, common::f64s(&reference["fold_samples"]));
    let rel = common::relative_error(&cv.error, &common::f64s(&reference["error"]));
    assert!(rel < 1e-8, "K-fold errors vs NumPy: relative error {rel}");
    assert_eq!(cv.best, reference["best"].as_f64().unwrap());
    // Folds hold no sample twice and miss none.
    assert_eq!(cv.fold_samples.iter().sum::<f64>(), 2000.0);
}
