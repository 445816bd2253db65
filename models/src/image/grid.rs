//! Image grids as A1111's `modules/images.py` lays them out: `image_grid` (cells in rows) and
//! `draw_grid_annotations` (a label row on top, a label column on the left, each label wrapped
//! to its cell's width and shrunk until it fits). Labels are rasterised from the bundled DejaVu
//! Sans (`models/assets/fonts`) with ab_glyph.
//!
//! One deliberate difference: a label line's height is the font's line box (ascent - descent),
//! not the ink box PIL measures, so the layout of a grid is known from its labels' text alone.

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};

use super::{ImageError, RgbImage};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn font() -> Result<FontRef<'static>, ImageError> {
    FontRef::try_from_slice(FONT).map_err(|e| ImageError::Encode(format!("bundled font: {e}")))
}

/// A PIL font size (pixels per em) as ab_glyph's scale (pixels per ascent-to-descent height).
fn scale(font: &FontRef, size: usize) -> PxScale {
    let em = font.units_per_em().unwrap_or(2048.0);
    PxScale::from(size as f32 * font.height_unscaled() / em)
}

/// The advance width of `text` at `size`, kerning included (PIL's `textlength`).
fn text_width(font: &FontRef, size: usize, text: &str) -> f32 {
    let f = font.as_scaled(scale(font, size));
    let mut width = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            width += f.kern(p, id);
        }
        width += f.h_advance(id);
        prev = Some(id);
    }
    width
}

/// The height a line of text takes at `size`; 0 for an empty line, as PIL measures "".
fn line_height(font: &FontRef, size: usize, text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    let f = font.as_scaled(scale(font, size));
    (f.ascent() - f.descent()).ceil() as usize
}

/// A1111's `wrap`: words added to a line while it fits `width`; a word too long stays alone.
fn wrap(font: &FontRef, size: usize, text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().map(|l| l.as_str()).unwrap_or("");
        let joined = format!("{last} {word}").trim().to_string();
        if text_width(font, size, &joined) <= width as f32 {
            if let Some(l) = lines.last_mut() {
                *l = joined;
            }
        } else {
            lines.push(word.to_string());
        }
    }
    lines
}

/// The cells of `images` (all the size of the first) in `rows` rows, filled row by row:
/// A1111's `image_grid`.
pub fn image_grid(images: &[RgbImage], rows: usize) -> Result<RgbImage, ImageError> {
    let first = images.first().ok_or(ImageError::Size {
        what: "grid of no images",
        width: 0,
        height: 0,
        len: 0,
        expected: 0,
    })?;
    let rows = rows.max(1);
    let cols = images.len().div_ceil(rows);
    let (w, h) = (first.width, first.height);
    let mut out = RgbImage {
        width: cols * w,
        height: rows * h,
        data: vec![0; cols * w * rows * h * 3],
    };
    for (i, im) in images.iter().enumerate() {
        if im.width != w || im.height != h {
            return Err(ImageError::Size {
                what: "grid cell (every cell must be the first one's size)",
                width: im.width,
                height: im.height,
                len: im.data.len(),
                expected: w * h * 3,
            });
        }
        paste(&mut out, im, (i % cols) * w, (i / cols) * h);
    }
    Ok(out)
}

fn paste(dst: &mut RgbImage, src: &RgbImage, x: usize, y: usize) {
    for row in 0..src.height {
        let s = row * src.width * 3;
        let d = ((y + row) * dst.width + x) * 3;
        dst.data[d..d + src.width * 3].copy_from_slice(&src.data[s..s + src.width * 3]);
    }
}

/// One wrapped label line.
#[derive(Clone, Debug)]
struct Line {
    text: String,
    height: usize,
    allowed_width: usize,
}

/// Where `draw_grid_annotations` puts everything, known before any cell exists.
#[derive(Clone, Debug)]
pub struct Annotations {
    pub cols: usize,
    pub rows: usize,
    pub cell_width: usize,
    pub cell_height: usize,
    /// Width of the label column (0 when every row label is empty).
    pub pad_left: usize,
    /// Height of the label row (0 when every column label is empty).
    pub pad_top: usize,
    pub margin: usize,
    /// The annotated grid's size.
    pub width: usize,
    pub height: usize,
    font_size: usize,
    line_spacing: usize,
    hor: Vec<Vec<Line>>,
    ver: Vec<Vec<Line>>,
}

impl Annotations {
    /// The layout for a grid of `hor.len()` columns and `ver.len()` rows of `cell_width` x
    /// `cell_height` cells, `margin` pixels between cells: A1111's font size
    /// `(w + h) / 25`, line spacing half of it, a label column `3/4` of a cell wide.
    pub fn layout(
        cell_width: usize,
        cell_height: usize,
        hor: &[String],
        ver: &[String],
        margin: usize,
    ) -> Result<Annotations, ImageError> {
        let font = font()?;
        let font_size = ((cell_width + cell_height) / 25).max(1);
        let line_spacing = font_size / 2;
        let pad_left = if ver.iter().all(|t| t.is_empty()) {
            0
        } else {
            cell_width * 3 / 4
        };
        let lines = |texts: &[String], allowed: usize| -> Vec<Vec<Line>> {
            texts
                .iter()
                .map(|t| {
                    wrap(&font, font_size, t, allowed)
                        .into_iter()
                        .map(|text| Line {
                            height: line_height(&font, font_size, &text),
                            text,
                            allowed_width: allowed,
                        })
                        .collect()
                })
                .collect()
        };
        let hor = lines(hor, cell_width);
        let ver = lines(ver, pad_left);
        let block = |ls: &Vec<Line>| {
            (ls.iter().map(|l| l.height + line_spacing).sum::<usize>()).saturating_sub(line_spacing)
        };
        let tallest = hor.iter().map(block).max().unwrap_or(0);
        let any = hor.iter().map(block).sum::<usize>() > 0;
        let pad_top = if any { tallest + line_spacing * 2 } else { 0 };
        let (cols, rows) = (hor.len().max(1), ver.len().max(1));
        Ok(Annotations {
            cols,
            rows,
            cell_width,
            cell_height,
            pad_left,
            pad_top,
            margin,
            width: cols * cell_width + pad_left + margin * (cols - 1),
            height: rows * cell_height + pad_top + margin * (rows - 1),
            font_size,
            line_spacing,
            hor,
            ver,
        })
    }

    /// The grid `im` (`cols` x `rows` cells) with its cells spread by the margin and the labels
    /// drawn, black on white.
    pub fn draw(&self, im: &RgbImage) -> Result<RgbImage, ImageError> {
        let (w, h) = (self.cell_width, self.cell_height);
        if im.width != self.cols * w || im.height != self.rows * h {
            return Err(ImageError::Size {
                what: "annotated grid (cells x cell size)",
                width: im.width,
                height: im.height,
                len: im.data.len(),
                expected: self.cols * w * self.rows * h * 3,
            });
        }
        let font = font()?;
        let mut out = RgbImage {
            width: self.width,
            height: self.height,
            data: vec![255; self.width * self.height * 3],
        };
        let mut cell = RgbImage {
            width: w,
            height: h,
            data: vec![0; w * h * 3],
        };
        for row in 0..self.rows {
            for col in 0..self.cols {
                for y in 0..h {
                    let s = ((row * h + y) * im.width + col * w) * 3;
                    cell.data[y * w * 3..(y + 1) * w * 3].copy_from_slice(&im.data[s..s + w * 3]);
                }
                let x = self.pad_left + (w + self.margin) * col;
                let y = self.pad_top + (h + self.margin) * row;
                paste(&mut out, &cell, x, y);
            }
        }
        let block = |ls: &[Line]| {
            ls.iter()
                .map(|l| l.height + self.line_spacing)
                .sum::<usize>()
        };
        for (col, lines) in self.hor.iter().enumerate() {
            let x = (self.pad_left + (w + self.margin) * col) as f32 + w as f32 / 2.0;
            let height = block(lines).saturating_sub(self.line_spacing) as f32;
            let y = self.pad_top as f32 / 2.0 - height / 2.0;
            self.draw_lines(&font, &mut out, x, y, lines);
        }
        for (row, lines) in self.ver.iter().enumerate() {
            let x = self.pad_left as f32 / 2.0;
            // A1111 subtracts a spacing per line here, so the block is its lines' heights.
            let height = lines.iter().map(|l| l.height).sum::<usize>() as f32;
            let y = (self.pad_top + (h + self.margin) * row) as f32 + h as f32 / 2.0 - height / 2.0;
            self.draw_lines(&font, &mut out, x, y, lines);
        }
        Ok(out)
    }

    /// A1111's `draw_texts`: each line centred on `x`, shrunk one size at a time until it fits
    /// its allowed width.
    fn draw_lines(&self, font: &FontRef, out: &mut RgbImage, x: f32, mut y: f32, lines: &[Line]) {
        for line in lines {
            let mut size = self.font_size;
            while size > 1 && text_width(font, size, &line.text) > line.allowed_width as f32 {
                size -= 1;
            }
            draw_text(font, size, out, x, y + line.height as f32 / 2.0, &line.text);
            y += (line.height + self.line_spacing) as f32;
        }
    }
}

/// `text` in black centred on (`cx`, `cy`) (PIL's anchor "mm": the middle of the advance width
/// and of the ascender-to-descender box), blended by glyph coverage.
fn draw_text(font: &FontRef, size: usize, out: &mut RgbImage, cx: f32, cy: f32, text: &str) {
    let scale = scale(font, size);
    let f = font.as_scaled(scale);
    let baseline = cy + (f.ascent() + f.descent()) / 2.0;
    let mut pen = cx - text_width(font, size, text) / 2.0;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            pen += f.kern(p, id);
        }
        let glyph = id.with_scale_and_position(scale, point(pen, baseline));
        if let Some(outlined) = font.outline_glyph(glyph) {
            let b = outlined.px_bounds();
            outlined.draw(|gx, gy, coverage| {
                let px = b.min.x as i64 + i64::from(gx);
                let py = b.min.y as i64 + i64::from(gy);
                if px < 0 || py < 0 || px >= out.width as i64 || py >= out.height as i64 {
                    return;
                }
                let i = (py as usize * out.width + px as usize) * 3;
                let keep = 1.0 - coverage.clamp(0.0, 1.0);
                for v in &mut out.data[i..i + 3] {
                    *v = (f32::from(*v) * keep).round() as u8;
                }
            });
        }
        pen += f.h_advance(id);
        prev = Some(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: usize, h: usize, v: u8) -> RgbImage {
        RgbImage {
            width: w,
            height: h,
            data: vec![v; w * h * 3],
        }
    }

    #[test]
    fn grid_fills_rows() {
        let cells: Vec<RgbImage> = (0..6).map(|i| solid(4, 2, i * 10)).collect();
        let g = image_grid(&cells, 2).unwrap();
        assert_eq!((g.width, g.height), (12, 4));
        // Cell 4 is row 1, column 1.
        assert_eq!(g.data[(2 * 12 + 4) * 3], 40);
        assert!(image_grid(&[solid(4, 2, 0), solid(2, 2, 0)], 1).is_err());
    }

    #[test]
    fn labels_take_a_row_and_a_column_and_are_drawn() {
        let (w, h) = (100, 100);
        let hor: Vec<String> = ["Steps: 10", "Steps: 20"].map(String::from).to_vec();
        let ver: Vec<String> = ["CFG Scale: 5.0"].map(String::from).to_vec();
        let a = Annotations::layout(w, h, &hor, &ver, 0).unwrap();
        let font = font().unwrap();
        let lh = line_height(&font, 8, "x");
        assert_eq!(a.pad_left, 75);
        // Font size (100 + 100) / 25 = 8, spacing 4: one line plus a spacing above and below.
        assert_eq!(a.pad_top, lh + 8);
        assert_eq!((a.width, a.height), (275, 100 + lh + 8));
        let grid = image_grid(&[solid(w, h, 128), solid(w, h, 128)], 1).unwrap();
        let out = a.draw(&grid).unwrap();
        assert_eq!((out.width, out.height), (a.width, a.height));
        // Cells untouched, label row has dark ink, margins otherwise white.
        let px = |x: usize, y: usize| out.data[(y * out.width + x) * 3];
        assert_eq!(px(75, a.pad_top), 128);
        assert_eq!(px(274, a.height - 1), 128);
        let ink = (0..a.pad_top)
            .flat_map(|y| (75..275).map(move |x| (x, y)))
            .filter(|&(x, y)| px(x, y) < 100)
            .count();
        assert!(ink > 20, "{ink} dark pixels in the label row");
        let left_ink = (a.pad_top..a.height)
            .flat_map(|y| (0..75).map(move |x| (x, y)))
            .filter(|&(x, y)| px(x, y) < 100)
            .count();
        assert!(left_ink > 20, "{left_ink} dark pixels in the label column");
    }

    #[test]
    fn long_labels_wrap_and_empty_ones_take_no_room() {
        let long = vec!["a very long label that cannot fit in one narrow cell".to_string()];
        let a = Annotations::layout(64, 64, &long, &[String::new()], 0).unwrap();
        let short = Annotations::layout(64, 64, &["a".to_string()], &[String::new()], 0).unwrap();
        assert!(a.hor[0].len() > 2, "{:?}", a.hor[0]);
        assert!(a.pad_top > short.pad_top);
        assert_eq!(a.pad_left, 0);
        let none = Annotations::layout(64, 64, &[String::new()], &[String::new()], 0).unwrap();
        assert_eq!((none.width, none.height), (64, 64));
        let margin =
            Annotations::layout(10, 10, &vec![String::new(); 3], &vec![String::new(); 2], 4)
                .unwrap();
        assert_eq!((margin.width, margin.height), (38, 24));
    }
}
