use std::path::Path;

use proptest::prelude::*;
use splatdiff_scene::ply::{parse_ply_table, read_ply_table, sh_rest_count, write_ply_table};
use splatdiff_scene::{read_splats, write_splats, GaussianSplats, PlyTable};

use crate::assert_error;

/// A property value of a hand-made PLY file.
#[derive(Clone)]
enum Val {
    F32(f32),
    F64(f64),
    U8(u8),
    I32(i32),
    /// A `list uchar int`.
    List(Vec<i32>),
}

impl Val {
    fn ply_type(&self) -> &'static str {
        match self {
            Val::F32(_) => "float",
            Val::F64(_) => "double",
            Val::U8(_) => "uchar",
            Val::I32(_) => "int",
            Val::List(_) => "list uchar int",
        }
    }

    fn encode(&self, format: &str, out: &mut Vec<u8>) {
        let big = format == "binary_big_endian";
        let mut bytes = |mut b: Vec<u8>| {
            if big {
                b.reverse();
            }
            out.extend(b);
        };
        match self {
            Val::F32(v) => bytes(v.to_le_bytes().to_vec()),
            Val::F64(v) => bytes(v.to_le_bytes().to_vec()),
            Val::U8(v) => bytes(vec![*v]),
            Val::I32(v) => bytes(v.to_le_bytes().to_vec()),
            Val::List(items) => {
                Val::U8(items.len() as u8).encode(format, out);
                for &i in items {
                    Val::I32(i).encode(format, out);
                }
            }
        }
    }

    fn text(&self) -> String {
        match self {
            Val::F32(v) => v.to_string(),
            Val::F64(v) => v.to_string(),
            Val::U8(v) => v.to_string(),
            Val::I32(v) => v.to_string(),
            Val::List(items) => std::iter::once(items.len().to_string())
                .chain(items.iter().map(|i| i.to_string()))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// An element of a hand-made PLY file: its name, property names and rows
/// (each row's values give the property types).
struct Elem {
    name: &'static str,
    props: Vec<&'static str>,
    rows: Vec<Vec<Val>>,
}

/// Encodes `elements` as a PLY file in `format`.
fn ply_file(format: &str, elements: &[Elem]) -> Vec<u8> {
    let mut out = format!("ply\nformat {format} 1.0\ncomment made by a test\nobj_info none\n").into_bytes();
    for e in elements {
        out.extend(format!("element {} {}\n", e.name, e.rows.len()).bytes());
        for (i, name) in e.props.iter().enumerate() {
            out.extend(format!("property {} {name}\n", e.rows[0][i].ply_type()).bytes());
        }
    }
    out.extend(b"end_header\n");
    for e in elements {
        for row in &e.rows {
            if format == "ascii" {
                let line: Vec<String> = row.iter().map(Val::text).collect();
                out.extend(format!("{}\n", line.join(" ")).bytes());
            } else {
                row.iter().for_each(|v| v.encode(format, &mut out));
            }
        }
    }
    out
}

/// A file as another trainer might write it: a face element first, splat
/// properties shuffled, some doubles, colour bytes and a custom property,
/// and a trailing edge element.
fn foreign_file(format: &str) -> Vec<u8> {
    let faces = Elem {
        name: "face",
        props: vec!["vertex_indices", "flags"],
        rows: vec![vec![Val::List(vec![0, 1, 2]), Val::U8(7)], vec![Val::List(vec![2, 1, 0, 3]), Val::U8(8)]],
    };
    let props = vec![
        "rot_3", "y", "opacity", "scale_2", "red", "x", "f_dc_1", "rot_0", "custom", "scale_0", "z", "f_dc_0", "rot_1",
        "scale_1", "f_dc_2", "rot_2",
    ];
    let rows = (0..3)
        .map(|i| {
            let f = i as f32;
            vec![
                Val::F32(0.4 + f),
                Val::F64(-2.5 + f as f64),
                Val::F32(1.5),
                Val::F64(-3.0),
                Val::U8(200 + i as u8),
                Val::F32(1.25 * f),
                Val::F32(0.2),
                Val::F32(1.0),
                Val::F64(1e-3 * f as f64),
                Val::I32(-1),
                Val::F32(3.0 + f),
                Val::F32(-0.1),
                Val::F32(0.0),
                Val::F32(-2.0),
                Val::F32(0.3),
                Val::F32(0.5),
            ]
        })
        .collect();
    let vertices = Elem { name: "vertex", props, rows };
    let edges = Elem { name: "edge", props: vec!["a", "b"], rows: vec![vec![Val::I32(0), Val::I32(1)]] };
    ply_file(format, &[faces, vertices, edges])
}

fn parse(bytes: &[u8]) -> splatdiff_scene::Result<PlyTable> {
    parse_ply_table(bytes, Path::new("test.ply"))
}

#[test]
fn foreign_layouts_load_by_name_in_every_format() {
    for format in ["binary_little_endian", "binary_big_endian", "ascii"] {
        let table = parse(&foreign_file(format)).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(table.count, 3);
        assert_eq!(table.columns[0].0, "rot_3", "file order kept");
        let splats = GaussianSplats::from_table(&table, Path::new("test.ply")).unwrap();
        assert_eq!(splats.len(), 3);
        assert_eq!(splats.sh_degree, 0);
        assert_eq!(splats.positions[2], [2.5, -0.5, 5.0], "{format}");
        assert_eq!(splats.sh_dc[1], [-0.1, 0.2, 0.3]);
        assert_eq!(splats.scales[0], [-1.0, -2.0, -3.0]);
        assert_eq!(splats.rotations[1], [1.0, 0.0, 0.5, 0.4 + 1.0]);
        assert_eq!(splats.opacity, vec![1.5; 3]);
        let extra: Vec<&str> = splats.extra.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(extra, ["red", "custom"]);
        assert_eq!(splats.extra[0].1, vec![200.0, 201.0, 202.0]);
        assert_eq!(splats.extra[1].1[2], 2e-3);
    }
}

#[test]
fn every_truncation_of_a_binary_file_is_an_error() {
    for format in ["binary_little_endian", "binary_big_endian"] {
        let bytes = foreign_file(format);
        assert!(parse(&bytes).is_ok());
        for len in 0..bytes.len() {
            assert!(parse(&bytes[..len]).is_err(), "{format}: truncation to {len} bytes was accepted");
        }
    }
}

#[test]
fn truncated_data_says_how_many_bytes_were_expected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.ply");
    let bytes = foreign_file("binary_little_endian");
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let found = (bytes.len() - 20).to_string();
    assert_error(read_ply_table(&path), &path, &["truncated", "element 'vertex'", &found]);
}

#[test]
fn malformed_headers_are_named() {
    let vertex = "element vertex 1\nproperty float x\n";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"PK\x03\x04 zip".to_vec(), "not a PLY file"),
        (format!("ply\nformat binary_middle_endian 1.0\n{vertex}end_header\n").into_bytes(), "unknown format"),
        (format!("ply\nformat ascii 1.0\n{vertex}").into_bytes(), "no end_header"),
        (b"ply\nformat ascii 1.0\ncomment \xff\xfe\nend_header\n".to_vec(), "not UTF-8"),
        (b"ply\nformat ascii 1.0\nelement face 0\nend_header\n".to_vec(), "no 'vertex' element"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n1\n".to_vec(), "unknown property type"),
        (format!("ply\n{vertex}end_header\n").into_bytes(), "no format line"),
        (
            b"ply\nformat binary_little_endian 1.0\nelement vertex 99999999999999999999\nproperty float x\nend_header\n".to_vec(),
            "not a whole number",
        ),
        (
            b"ply\nformat binary_little_endian 1.0\nelement vertex 9999999999999999999\nproperty double x\nend_header\n".to_vec(),
            "impossible",
        ),
        (
            b"ply\nformat ascii 1.0\nelement vertex 1000000\nproperty float x\nend_header\n1 2 3\n".to_vec(),
            "more than",
        ),
        (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nend_header\n1 abc\n".to_vec(), "not a number"),
    ];
    for (bytes, needle) in cases {
        let err = parse(&bytes).expect_err(needle).to_string();
        assert!(err.contains(needle) && err.contains("test.ply"), "expected {needle:?}, got {err}");
    }
}

/// Random splats of one SH degree, with values of every kind (NaN and
/// infinities only where the format allows them).
fn splats_strategy() -> impl Strategy<Value = GaussianSplats> {
    use proptest::num::f32::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    let finite = || POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO;
    (0usize..12, 0u32..=3, 0usize..3).prop_flat_map(move |(n, degree, extras)| {
        use prop::collection::vec;
        (
            vec(prop::array::uniform3(finite()), n),
            vec(prop::array::uniform3(any::<f32>()), n),
            vec(any::<f32>(), n * sh_rest_count(degree)),
            vec(any::<f32>(), n),
            vec(prop::array::uniform3(finite()), n),
            vec(prop::array::uniform4(finite()), n),
            vec(vec(any::<f32>(), n), extras),
        )
            .prop_map(move |(positions, sh_dc, sh_rest, opacity, scales, rotations, extra)| GaussianSplats {
                positions,
                sh_dc,
                sh_rest,
                sh_degree: degree,
                opacity,
                scales,
                rotations,
                extra: extra.into_iter().enumerate().map(|(i, v)| (format!("extra_{i}"), v)).collect(),
            })
    })
}

/// The bits of every value, so that NaNs compare equal to themselves.
fn bits(s: &GaussianSplats) -> Vec<u32> {
    let table = s.to_table();
    table.columns.iter().flat_map(|(_, v)| v.iter().map(|x| x.to_bits())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn splats_round_trip_bit_exactly(splats in splats_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ply");
        write_splats(&path, &splats).unwrap();
        let back = read_splats(&path).unwrap();
        prop_assert_eq!(back.sh_degree, splats.sh_degree);
        prop_assert_eq!(back.len(), splats.len());
        prop_assert_eq!(bits(&back), bits(&splats));
        let names: Vec<String> = read_ply_table(&path).unwrap().columns.into_iter().map(|(n, _)| n).collect();
        let rest = sh_rest_count(splats.sh_degree);
        prop_assert_eq!(&names[..9], &["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]);
        prop_assert_eq!(&names[9 + rest..17 + rest],
            &["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]);
        if rest > 0 {
            prop_assert_eq!(&names[9], "f_rest_0");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn arbitrary_headers_and_bodies_never_panic(
        lines in prop::collection::vec(prop::sample::select(vec![
            "format ascii 1.0", "format binary_little_endian 1.0", "format binary_big_endian 1.0",
            "element vertex 3", "element vertex 0", "element face 2", "element vertex 4000000000",
            "property float x", "property double y", "property uchar z", "property int16 w",
            "property list uchar int idx", "property list int float vals", "property list float int bad",
            "comment x", "end_header", "property", "element",
        ]), 0..10),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = b"ply\n".to_vec();
        for line in lines {
            bytes.extend(line.bytes());
            bytes.push(b'\n');
        }
        bytes.extend(body);
        if let Ok(table) = parse(&bytes) {
            prop_assert!(table.columns.iter().all(|(_, v)| v.len() == table.count));
            prop_assert!(table.count * table.columns.len() <= bytes.len());
        }
    }
}

/// A table with every required splat property for one splat, plus `more`.
fn table_with(skip: &[&str], more: &[&str]) -> PlyTable {
    let names = [
        "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1",
        "rot_2", "rot_3",
    ];
    let columns =
        names.iter().filter(|n| !skip.contains(n)).chain(more).map(|n| (n.to_string(), vec![0.5, 1.0])).collect();
    PlyTable { count: 2, columns }
}

#[test]
fn missing_properties_are_listed() {
    let path = Path::new("trainer.ply");
    let result = GaussianSplats::from_table(&table_with(&["opacity", "rot_2"], &[]), path);
    assert_error(result, path, &["missing", "opacity, rot_2"]);
}

#[test]
fn sh_degree_comes_from_the_f_rest_count() {
    let path = Path::new("sh.ply");
    let rest: Vec<String> = (0..45).map(|i| format!("f_rest_{i}")).collect();
    let names = |range: std::ops::Range<usize>| rest[range].iter().map(String::as_str).collect::<Vec<_>>();
    for (count, degree) in [(0, 0), (9, 1), (24, 2), (45, 3)] {
        let splats = GaussianSplats::from_table(&table_with(&[], &names(0..count)), path).unwrap();
        assert_eq!(splats.sh_degree, degree);
        assert_eq!(splats.sh_rest.len(), 2 * count);
    }
    assert_error(GaussianSplats::from_table(&table_with(&[], &names(0..10)), path), path, &["10 f_rest_*"]);
    let gap = [names(0..8), vec!["f_rest_9"]].concat();
    assert_error(GaussianSplats::from_table(&table_with(&[], &gap), path), path, &["'f_rest_8' is missing"]);
}

#[test]
fn non_finite_geometry_names_splat_and_property() {
    let path = Path::new("nan.ply");
    let mut table = table_with(&[], &[]);
    table.columns.iter_mut().find(|(n, _)| n == "scale_1").unwrap().1[1] = f32::NAN;
    table.columns.iter_mut().find(|(n, _)| n == "opacity").unwrap().1[0] = f32::NAN; // allowed
    assert_error(GaussianSplats::from_table(&table, path), path, &["splat 1: scale_1 is NaN"]);
}

#[test]
fn write_rejects_inconsistent_tables_and_splats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.ply");
    let short = PlyTable { count: 2, columns: vec![("x".into(), vec![1.0])] };
    assert_error(write_ply_table(&path, &short), &path, &["'x' has 1 values for 2 vertices"]);
    let spaced = PlyTable { count: 0, columns: vec![("a b".into(), vec![])] };
    assert_error(write_ply_table(&path, &spaced), &path, &["not a non-empty word without spaces"]);
    let splats = GaussianSplats { positions: vec![[0.0; 3]], ..Default::default() };
    assert_error(write_splats(&path, &splats), &path, &["sh_dc has 0 values, expected 1"]);
    assert!(!path.exists());
}

#[test]
fn display_helpers() {
    let splats = GaussianSplats {
        positions: vec![[0.0; 3]; 2],
        sh_dc: vec![[0.0, 10.0, -10.0], [1.0, 1.0, 1.0]],
        opacity: vec![0.0, 100.0],
        scales: vec![[0.1f32.ln(); 3], [0.0, 1.0, 2.0]],
        rotations: vec![[1.0, 0.0, 0.0, 0.0]; 2],
        ..Default::default()
    };
    splats.validate().unwrap();
    let rgba = splats.display_rgba_linear();
    assert!((rgba[0][0] - 0.21404).abs() < 1e-4, "sRGB 0.5 is linear 0.214: {:?}", rgba[0]);
    assert_eq!(&rgba[0][1..], &[1.0, 0.0, 0.5]);
    assert!((rgba[1][3] - 1.0).abs() < 1e-6);
    let radius = splats.display_radius();
    assert!((radius[0] - 0.2).abs() < 1e-6);
    assert!((radius[1] - 2.0 * 1f32.exp()).abs() < 1e-5);
}
