//! `mnv4-lab detect predict CKPT IMAGES…`: a detector's boxes on any images, drawn into PNG
//! copies (one colour per class, enlarged `--zoom` times) and listed in a COCO results file
//! (`predictions.json`, boxes in each image's own pixels), which `detect map` can score.

use crate::data::{letterbox, DetectImage, LetterboxFit};
use crate::detect::nms::Scored;
use crate::fsutil::atomic_write;
use crate::train::detector::checkpoint::{load_detector, LoadedDetector};
use crate::train::detector::evaluate::predict;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

/// Predicts on every image, writes `out/<stem>.png` with its boxes (on a copy enlarged `zoom`
/// times) and `out/predictions.json`.
pub fn run_predict(
    sidecar: &Path,
    images: &[std::path::PathBuf],
    out: &Path,
    conf: f32,
    zoom: usize,
) -> Result<()> {
    let LoadedDetector {
        data,
        predict: mut cfg,
        net,
        ..
    } = load_detector(sidecar)?;
    cfg.conf = conf;
    cfg.check()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut results = Vec::new();
    for (k, path) in images.iter().enumerate() {
        let img = open_rgb(path)?;
        let fit = LetterboxFit::new(img.width, img.height, data.imgsz);
        let square = letterbox(&img, data.imgsz);
        let mut planar = vec![0f32; 3 * data.imgsz * data.imgsz];
        square.write_planar(&mut planar);
        let x = Tensor::from_vec(planar, (1, 3, data.imgsz, data.imgsz), &Device::Cpu)?;
        let dets: Vec<Scored> = predict(&net, &x, &cfg)?.remove(0);
        let mut drawn = enlarged(&img, zoom);
        for d in &dets {
            let [x1, y1, x2, y2] = fit.to_original(d.xyxy);
            draw_box(
                &mut drawn,
                [x1, y1, x2, y2].map(|v| v * zoom as f32),
                d.class,
                zoom,
            );
            results.push(serde_json::json!({
                "image_id": k + 1, "file_name": path.display().to_string(),
                "category_id": d.class, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": d.score,
            }));
        }
        let stem = path
            .file_stem()
            .map_or("image".into(), |s| s.to_string_lossy().into_owned());
        let png = out.join(format!("{stem}.png"));
        image::RgbImage::from_raw(drawn.width as u32, drawn.height as u32, drawn.rgb)
            .context("image buffer")?
            .save(&png)
            .with_context(|| format!("writing {}", png.display()))?;
        println!(
            "{}: {} detections at confidence > {conf} → {}",
            path.display(),
            dets.len(),
            png.display()
        );
    }
    atomic_write(
        &out.join("predictions.json"),
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )
}

/// Reads an image file as RGB.
fn open_rgb(path: &Path) -> Result<DetectImage> {
    let rgb = image::open(path)
        .with_context(|| format!("{} is not a readable image", path.display()))?
        .to_rgb8();
    Ok(DetectImage {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        rgb: rgb.into_raw(),
        objects: Vec::new(),
    })
}

/// A copy of `img` enlarged `zoom` times by repeating pixels.
fn enlarged(img: &DetectImage, zoom: usize) -> DetectImage {
    let (w, h) = (img.width * zoom, img.height * zoom);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let at = ((y / zoom) * img.width + x / zoom) * 3;
            rgb.extend_from_slice(&img.rgb[at..at + 3]);
        }
    }
    DetectImage {
        width: w,
        height: h,
        rgb,
        objects: Vec::new(),
    }
}

/// Draws a rectangle in the class's colour, `zoom / 2` pixels thick (at least one), clipped to
/// the image.
fn draw_box(img: &mut DetectImage, xyxy: [f32; 4], class: usize, zoom: usize) {
    const COLOURS: [[u8; 3]; 10] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ];
    let colour = COLOURS[class % COLOURS.len()];
    let (w, h) = (img.width as i64, img.height as i64);
    let clamp = |v: f32, hi: i64| (v.round() as i64).clamp(0, hi - 1);
    let (x1, y1, x2, y2) = (
        clamp(xyxy[0], w),
        clamp(xyxy[1], h),
        clamp(xyxy[2], w),
        clamp(xyxy[3], h),
    );
    let mut put = |x: i64, y: i64| {
        let at = ((y * w + x) * 3) as usize;
        img.rgb[at..at + 3].copy_from_slice(&colour);
    };
    for t in 0..(zoom as i64 / 2).max(1) {
        let (l, r) = ((x1 + t).min(w - 1), (x2 - t).max(0));
        let (top, bottom) = ((y1 + t).min(h - 1), (y2 - t).max(0));
        for x in x1..=x2 {
            put(x, top);
            put(x, bottom);
        }
        for y in y1..=y2 {
            put(l, y);
            put(r, y);
        }
    }
}
