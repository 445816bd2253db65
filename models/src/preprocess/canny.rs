//! Canny edges computed as OpenCV's `cv2.Canny(image, low, high)` does with its defaults
//! (aperture 3, L1 gradient), so kiln's canny maps match what the A1111 extension feeds a
//! ControlNet: 3x3 Sobel per channel with replicated borders, the channel with the largest
//! |dx| + |dy| per pixel, non-maximum suppression along the gradient quantised to four directions
//! (OpenCV's fixed-point tan 22.5° test), then hysteresis: pixels above `high`, and those above
//! `low` connected to them through 8-neighbours, become 255.

use crate::image::{GrayImage, RgbImage};

/// tan(22.5°) in OpenCV's 15-bit fixed point.
const TAN_22_5: i64 = 13573;
const SHIFT: u32 = 15;

pub fn canny(img: &RgbImage, low: f32, high: f32) -> GrayImage {
    let (w, h) = (img.width, img.height);
    // OpenCV floors the thresholds of the L1 gradient and swaps them if given the wrong way round.
    let (mut low, mut high) = (low.floor() as i32, high.floor() as i32);
    if low > high {
        std::mem::swap(&mut low, &mut high);
    }
    let (dx, dy, mag) = gradients(img);
    let at = |x: isize, y: isize| -> i32 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0
        } else {
            mag[y as usize * w + x as usize]
        }
    };

    // 0: not an edge, 1: candidate (above low, a local maximum), 2: edge.
    let mut state = vec![0u8; w * h];
    let mut stack = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let m = mag[i];
            if m <= low {
                continue;
            }
            let (xs, ys) = (i64::from(dx[i]), i64::from(dy[i]));
            let ax = xs.abs();
            let ay = ys.abs() << SHIFT;
            let tg22 = ax * TAN_22_5;
            let (xi, yi) = (x as isize, y as isize);
            let local_max = if ay < tg22 {
                m > at(xi - 1, yi) && m >= at(xi + 1, yi)
            } else if ay > tg22 + (ax << (SHIFT + 1)) {
                m > at(xi, yi - 1) && m >= at(xi, yi + 1)
            } else {
                let s = if (xs ^ ys) < 0 { -1 } else { 1 };
                m > at(xi - s, yi - 1) && m > at(xi + s, yi + 1)
            };
            if !local_max {
                continue;
            }
            if m > high {
                state[i] = 2;
                stack.push(i);
            } else {
                state[i] = 1;
            }
        }
    }
    while let Some(i) = stack.pop() {
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        for ny in y - 1..=y + 1 {
            for nx in x - 1..=x + 1 {
                if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                    continue;
                }
                let j = ny as usize * w + nx as usize;
                if state[j] == 1 {
                    state[j] = 2;
                    stack.push(j);
                }
            }
        }
    }
    GrayImage {
        width: w,
        height: h,
        data: state
            .iter()
            .map(|&s| if s == 2 { 255 } else { 0 })
            .collect(),
    }
}

/// Per pixel: the Sobel dx, dy of the channel with the largest |dx| + |dy| (the first such
/// channel on ties) and that magnitude.
fn gradients(img: &RgbImage) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let (w, h) = (img.width, img.height);
    let px = |x: isize, y: isize, c: usize| -> i32 {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        i32::from(img.data[(y * w + x) * 3 + c])
    };
    let mut dx = vec![0; w * h];
    let mut dy = vec![0; w * h];
    let mut mag = vec![-1; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            for c in 0..3 {
                let gx = (px(x + 1, y - 1, c) - px(x - 1, y - 1, c))
                    + 2 * (px(x + 1, y, c) - px(x - 1, y, c))
                    + (px(x + 1, y + 1, c) - px(x - 1, y + 1, c));
                let gy = (px(x - 1, y + 1, c) - px(x - 1, y - 1, c))
                    + 2 * (px(x, y + 1, c) - px(x, y - 1, c))
                    + (px(x + 1, y + 1, c) - px(x + 1, y - 1, c));
                let m = gx.abs() + gy.abs();
                if m > mag[i] {
                    mag[i] = m;
                    dx[i] = gx;
                    dy[i] = gy;
                }
            }
        }
    }
    (dx, dy, mag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vertical_step_gives_one_thin_vertical_edge() {
        let (w, h) = (12, 7);
        let mut data = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                let v = if x < 6 { 20 } else { 220 };
                data.extend([v, v, v]);
            }
        }
        let img = RgbImage::new(w, h, data).unwrap();
        let edges = canny(&img, 100.0, 200.0);
        for y in 0..h {
            let row: Vec<usize> = (0..w).filter(|&x| edges.data[y * w + x] == 255).collect();
            // The step's magnitude peaks on both sides of it; OpenCV keeps the left one (its
            // `m > left && m >= right` test).
            assert_eq!(row, [5], "row {y}");
        }
    }

    #[test]
    fn weak_edges_survive_only_when_connected_to_strong_ones() {
        // A strong step on the left half of a row boundary, a weak one on the right.
        let (w, h) = (16, 8);
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let top = 30;
                let bottom = if x < 8 { 230 } else { 60 };
                let v = if y < 4 { top } else { bottom };
                data.extend([v, v, v]);
            }
        }
        let img = RgbImage::new(w, h, data).unwrap();
        let connected = canny(&img, 50.0, 400.0);
        let weak_alone = canny(&img, 150.0, 4000.0);
        assert!(
            connected.data[3 * w + 12] == 255,
            "weak part joins the strong edge"
        );
        assert!(weak_alone.data.iter().all(|&v| v == 0));
    }
}
