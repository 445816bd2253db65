//! ControlNet preprocessors against OpenCV / the A1111 extension's formulas on fixture images
//! (tools/make_preprocess_fixtures.py): invert and threshold exactly, canny and scribble_xdog by
//! pixel agreement rate.

use std::path::PathBuf;

use kiln_models::image::{read_image, RgbImage};
use kiln_models::preprocess::Preprocessor;

fn fixture(name: &str) -> RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/preprocess")
        .join(name);
    read_image(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// The fraction of pixels where kiln's map (RGB, gray replicated) equals the reference's.
fn agreement(ours: &RgbImage, reference: &RgbImage) -> f64 {
    assert_eq!(
        (ours.width, ours.height),
        (reference.width, reference.height)
    );
    assert!(ours.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    let same = ours
        .data
        .chunks(3)
        .zip(reference.data.chunks(3))
        .filter(|(a, b)| a[0] == b[0])
        .count();
    same as f64 / (ours.width * ours.height) as f64
}

const IMAGES: [&str; 2] = ["shapes", "sketch"];

#[test]
fn canny_matches_opencv() {
    for stem in IMAGES {
        let img = fixture(&format!("{stem}.png"));
        for (low, high) in [(100, 200), (30, 90), (150, 151)] {
            let p = Preprocessor::with_thresholds("canny", Some(low as f32), Some(high as f32))
                .unwrap();
            let ours = p.apply(&img).unwrap();
            let reference = fixture(&format!("{stem}_canny_{low}_{high}.png"));
            let rate = agreement(&ours, &reference);
            println!(
                "canny {stem} {low}/{high}: {:.4}% of pixels agree",
                rate * 100.0
            );
            assert!(rate == 1.0, "canny {stem} {low}/{high}: agreement {rate}");
        }
    }
}

#[test]
fn scribble_xdog_matches_the_extension() {
    for stem in IMAGES {
        let img = fixture(&format!("{stem}.png"));
        let ours = Preprocessor::from_name("scribble_xdog")
            .unwrap()
            .apply(&img)
            .unwrap();
        let rate = agreement(&ours, &fixture(&format!("{stem}_xdog_32.png")));
        println!("scribble_xdog {stem}: {:.4}% of pixels agree", rate * 100.0);
        // Float blur sums in another order can flip a pixel sitting on the threshold.
        assert!(rate >= 0.999, "scribble_xdog {stem}: agreement {rate}");
    }
}

#[test]
fn threshold_and_invert_are_exact() {
    for stem in IMAGES {
        let img = fixture(&format!("{stem}.png"));
        let t = Preprocessor::from_name("threshold")
            .unwrap()
            .apply(&img)
            .unwrap();
        assert_eq!(
            agreement(&t, &fixture(&format!("{stem}_threshold_127.png"))),
            1.0
        );
        let inv = Preprocessor::from_name("invert")
            .unwrap()
            .apply(&img)
            .unwrap();
        assert_eq!(inv, fixture(&format!("{stem}_invert.png")));
    }
}
