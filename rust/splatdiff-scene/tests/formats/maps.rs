use splatdiff_scene::maps::{read_float_exr, read_mask_png, write_depth_exr, write_mask_png, write_normal_exr};
use splatdiff_scene::FloatMap;

use crate::assert_error;

fn ramp(width: u32, height: u32, channels: u32) -> FloatMap {
    let n = (width * height * channels) as usize;
    let data = (0..n).map(|i| (i as f32 - 7.0) * 0.37).collect();
    FloatMap { width, height, channels, data }
}

#[test]
fn depth_and_normal_exr_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let depth = ramp(5, 3, 1);
    let path = dir.path().join("depth.exr");
    write_depth_exr(&path, &depth).unwrap();
    assert_eq!(read_float_exr(&path).unwrap(), depth);
    let normal = ramp(4, 6, 3);
    let path = dir.path().join("normal.exr");
    write_normal_exr(&path, &normal).unwrap();
    assert_eq!(read_float_exr(&path).unwrap(), normal, "channels come back in R, G, B order");
    assert_error(write_depth_exr(&path, &normal), &path, &["3 channels"]);
    let short = FloatMap { data: vec![0.0; 3], ..ramp(2, 2, 1) };
    assert_error(write_depth_exr(&path, &short), &path, &["holds 3 values"]);
}

#[test]
fn other_channel_layouts_are_read() {
    use exr::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.exr");
    let z = AnyChannel::new("Z", FlatSamples::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    Image::from_channels((3, 2), AnyChannels::sort(vec![z].into())).write().to_file(&path).unwrap();
    assert_eq!(read_float_exr(&path).unwrap().data, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let path = dir.path().join("rgba.exr");
    write_rgba_file(&path, 2, 1, |x, _| (x as f32, 10.0, 20.0, 0.5)).unwrap();
    let map = read_float_exr(&path).unwrap();
    assert_eq!((map.channels, map.data), (4, vec![0.0, 10.0, 20.0, 0.5, 1.0, 10.0, 20.0, 0.5]));
    let path = dir.path().join("uv.exr");
    let u = AnyChannel::new("U", FlatSamples::F32(vec![0.0; 2]));
    let v = AnyChannel::new("V", FlatSamples::F32(vec![0.0; 2]));
    Image::from_channels((2, 1), AnyChannels::sort(vec![u, v].into())).write().to_file(&path).unwrap();
    assert_error(read_float_exr(&path), &path, &["channels U, V"]);
}

#[test]
fn mask_png_round_trip_and_colour_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mask.png");
    let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
    write_mask_png(&path, 4, 3, &pixels).unwrap();
    assert_eq!(read_mask_png(&path).unwrap(), (4, 3, pixels));
    assert_error(write_mask_png(&path, 4, 4, &[0; 12]), &path, &["4x4", "12 values"]);
    let rgb = dir.path().join("rgb.png");
    image::RgbImage::from_pixel(2, 2, image::Rgb([255, 255, 255])).save(&rgb).unwrap();
    assert_eq!(read_mask_png(&rgb).unwrap(), (2, 2, vec![255; 4]));
}

#[test]
fn corrupt_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.exr");
    std::fs::write(&path, b"v/1\x01 not really an exr file").unwrap();
    assert_error(read_float_exr(&path), &path, &["not a readable OpenEXR file"]);
    let path = dir.path().join("junk.png");
    std::fs::write(&path, b"\x89PNG\r\n\x1a\n broken").unwrap();
    assert_error(read_mask_png(&path), &path, &["not a readable PNG"]);
    let missing = dir.path().join("missing.png");
    assert_error(read_mask_png(&missing), &missing, &[]);
}
