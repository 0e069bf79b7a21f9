//! The streamed fitting methods equal an independent NumPy implementation of the papers' own
//! matrix forms (scripts/reference/make_method_vectors.py) on the onnxruntime features of the 2,000
//! shipped training images: block-rls equals the one-shot ridge solution within 1e-9, and step
//! and recompute match the same update, step for step, within 1e-6.

use crate::common;

use fastretrain::fitting::{self, BlockRls, FitOptions, Method, StepFit};
use fastretrain::head::{Activation, Head};
use fastretrain::recompute::RecomputeOptions;
use fastretrain::store::FeatureSet;

struct Reference {
    set: FeatureSet,
    index: serde_json::Value,
    settings: serde_json::Value,
    values: Vec<f64>,
}

fn reference() -> Reference {
    let (features, label_ids, dim, _) = common::fashion_features();
    let json = common::json("methods_reference.json");
    let values = std::fs::read(common::data("methods_reference.bin"))
        .unwrap()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Reference {
        set: FeatureSet {
            dim,
            labels: (0..10).map(|k| k.to_string()).collect(),
            features,
            label_ids,
        },
        index: json["matrices"].clone(),
        settings: json["settings"].clone(),
        values,
    }
}

impl Reference {
    /// A reference matrix, row major.
    fn matrix(&self, name: &str) -> &[f64] {
        let m = &self.index[name];
        let offset = m["offset"].as_u64().unwrap() as usize;
        let len = (m["rows"].as_u64().unwrap() * m["cols"].as_u64().unwrap()) as usize;
        &self.values[offset..offset + len]
    }

    fn rows(&self, first: usize) -> FeatureSet {
        FeatureSet {
            dim: self.set.dim,
            labels: self.set.labels.clone(),
            features: self.set.features[..first * self.set.dim].to_vec(),
            label_ids: self.set.label_ids[..first].to_vec(),
        }
    }
}

fn row_major(w: faer::MatRef<'_, f64>) -> Vec<f64> {
    (0..w.nrows())
        .flat_map(|i| (0..w.ncols()).map(move |j| w[(i, j)]))
        .collect()
}

fn fit(r: &Reference, method: Method, batch: usize) -> Head {
    let options = FitOptions {
        method,
        lambda: Some(r.settings["lambda"].as_f64().unwrap()),
        batch,
        ..FitOptions::default()
    };
    fitting::fit(&r.set, &options).unwrap().0
}

#[test]
fn block_rls_after_the_last_batch_equals_the_one_shot_ridge_solution() {
    let r = reference();
    let ridge = r.matrix("ridge_lambda1");
    // 2,000 samples in 32 batches of 64 and in 20 batches of 100.
    for batch in [64, 100] {
        let head = fit(&r, Method::BlockRls, batch);
        let err = common::relative_error(&head.weights, ridge);
        eprintln!("batch {batch}: relative error {err:e}");
        assert!(err < 1e-9, "batch {batch}: relative error {err:e}");
    }
    // The streamed Gram solve agrees too (the default method).
    let err = common::relative_error(&fit(&r, Method::Gram, 64).weights, ridge);
    eprintln!("gram: relative error {err:e}");
    assert!(err < 1e-9, "gram: relative error {err:e}");
}

#[test]
fn block_rls_is_up_to_date_after_every_batch() {
    let r = reference();
    let mut rls = BlockRls::new(r.set.dim, 10, 1.0).unwrap();
    let first = r.rows(640);
    fastretrain::store::FeatureBatches::for_each_batch(&first, 64, &mut |f, l| rls.update(f, l))
        .unwrap();
    let err = common::relative_error(
        &row_major(rls.weights()),
        r.matrix("ridge_first640_lambda1"),
    );
    eprintln!("after 10 batches: relative error {err:e}");
    assert!(err < 1e-9, "after 10 batches: relative error {err:e}");
}

#[test]
fn step_form_matches_numpy_step_for_step() {
    let r = reference();
    let step = &r.settings["step"];
    let (eta, batch) = (
        step["eta"].as_f64().unwrap(),
        step["batch"].as_u64().unwrap() as usize,
    );
    let mut one = StepFit::new(r.set.dim, 10, 1.0, eta);
    one.update(
        &r.set.features[..batch * r.set.dim],
        &r.set.label_ids[..batch],
    )
    .unwrap();
    let err = common::relative_error(&row_major(one.weights()), r.matrix("step_after_batch1"));
    eprintln!("after batch 1: relative error {err:e}");
    assert!(err < 1e-6, "after batch 1: relative error {err:e}");
    for passes in [1, 2] {
        let head = fit(&r, Method::Step { eta, passes }, batch);
        let err =
            common::relative_error(&head.weights, r.matrix(&format!("step_after_pass{passes}")));
        eprintln!("after pass {passes}: relative error {err:e}");
        assert!(err < 1e-6, "after pass {passes}: relative error {err:e}");
    }
}

#[test]
fn recompute_matches_numpy_iteration_by_iteration() {
    let r = reference();
    let cases = r.settings["recompute"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let hidden: Vec<usize> = case["hidden"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap() as usize)
            .collect();
        let options = RecomputeOptions {
            hidden: hidden.clone(),
            activation: Activation::parse(case["activation"].as_str().unwrap()).unwrap(),
            iterations: case["iterations"].as_u64().unwrap() as usize,
            seed: case["seed"].as_u64().unwrap(),
        };
        let head = fit(&r, Method::Recompute(options), 64);
        assert_eq!(head.hidden.len(), hidden.len());
        for (i, layer) in head.hidden.iter().enumerate() {
            let err =
                common::relative_error(&layer.weights, r.matrix(&format!("{name}_hidden{i}")));
            eprintln!("{name} hidden layer {i}: relative error {err:e}");
            assert!(
                err < 1e-6,
                "{name} hidden layer {i}: relative error {err:e}"
            );
        }
        let err = common::relative_error(&head.weights, r.matrix(&format!("{name}_out")));
        eprintln!("{name} output layer: relative error {err:e}");
        assert!(err < 1e-6, "{name} output layer: relative error {err:e}");
    }
}

#[test]
fn relu_heads_are_refused_for_recomputation_but_can_refit_the_output_layer() {
    let r = reference();
    let small = r.rows(200);
    let relu = |iterations| {
        Method::Recompute(RecomputeOptions {
            hidden: vec![16],
            activation: Activation::Relu,
            iterations,
            seed: 1,
        })
    };
    let options = |method| FitOptions {
        method,
        lambda: Some(1.0),
        batch: 64,
        ..FitOptions::default()
    };
    let err = fitting::fit(&small, &options(relu(2)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no inverse"), "{err}");
    let (head, _) = fitting::fit(&small, &options(relu(0))).unwrap();
    assert_eq!(head.hidden[0].activation, Activation::Relu);
}
