use std::time::Instant;
use fastretrain::backbone::{Backbone, set_threads};
fn main() {
    let t: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(2);
    set_threads(t);
    let b = Backbone::load("models/mobilenetv2.onnx".as_ref(), None, None).unwrap();
    let input = vec![0.1f32; 3 * 224 * 224];
    let mut out = vec![0.0; 1280];
    for _ in 0..3 { b.features_into(&input, &mut out).unwrap(); }
    let s = Instant::now();
    for _ in 0..20 { b.features_into(&input, &mut out).unwrap(); }
    println!("threads {t}: {:.2} ms/img", s.elapsed().as_secs_f64() * 1000.0 / 20.0);
}
