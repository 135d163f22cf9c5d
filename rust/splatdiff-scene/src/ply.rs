//! Reading and writing 3D Gaussian Splatting `.ply` files.
//!
//! Two layers:
//!
//! * [`PlyTable`]: the `vertex` element of any PLY file (ASCII or binary,
//!   either byte order, any scalar types) as named `f32` columns. Other
//!   elements (faces of a mesh, …) are checked for size and skipped.
//! * [`GaussianSplats`]: the splat attributes of the 3DGS layout, found by
//!   property name so files from other trainers (other order, doubles, extra
//!   properties) load too, and written back in the standard order.
//!
//! Splat files hold millions of rows, so binary data is read with one read
//! and transposed into columns in cache-sized blocks on all cores.

use std::io::Write as _;
use std::path::Path;

use rayon::prelude::*;

use crate::atomic::write_atomic;
use crate::error::{Result, SceneError};

/// The `vertex` element of a PLY file: its properties by name, in file
/// order, with every value converted to `f32`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlyTable {
    /// Number of vertices; every column holds this many values.
    pub count: usize,
    pub columns: Vec<(String, Vec<f32>)>,
}

impl PlyTable {
    /// The values of the property `name`, if the table has it.
    pub fn column(&self, name: &str) -> Option<&[f32]> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// Why the table cannot be written or interpreted, if it cannot: a
    /// column of the wrong length, or a name PLY cannot hold.
    fn problem(&self) -> Option<String> {
        for (i, (name, values)) in self.columns.iter().enumerate() {
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Some(format!("property name {name:?} is not a non-empty word without spaces"));
            }
            if self.columns[..i].iter().any(|(n, _)| n == name) {
                return Some(format!("property '{name}' appears twice"));
            }
            if values.len() != self.count {
                return Some(format!("property '{name}' has {} values for {} vertices", values.len(), self.count));
            }
        }
        None
    }
}

/// Reads the `vertex` element of the PLY file at `path`.
pub fn read_ply_table(path: &Path) -> Result<PlyTable> {
    let bytes = std::fs::read(path).map_err(|e| SceneError::io(path, e))?;
    parse_ply_table(&bytes, path)
}

/// Parses the `vertex` element of a PLY file already in memory; `path` only
/// names the file in errors.
pub fn parse_ply_table(bytes: &[u8], path: &Path) -> Result<PlyTable> {
    let bad = |message: String| SceneError::invalid(path, message);
    let header = parse_header(bytes).map_err(bad)?;
    let body = &bytes[header.body_start..];
    let columns = match header.format {
        Format::Ascii => read_ascii_body(body, &header.elements),
        Format::Binary { big_endian } => read_binary_body(body, header.body_start, &header.elements, big_endian),
    }
    .map_err(bad)?;
    let vertex = header.elements.iter().find(|e| e.is_vertex()).map_or(0, |e| e.count);
    Ok(PlyTable { count: vertex, columns })
}

/// Writes `table` as a binary little-endian PLY file with one `vertex`
/// element of `float` properties, atomically.
pub fn write_ply_table(path: &Path, table: &PlyTable) -> Result<()> {
    if let Some(problem) = table.problem() {
        return Err(SceneError::invalid(path, problem));
    }
    let mut header = format!("ply\nformat binary_little_endian 1.0\nelement vertex {}\n", table.count);
    for (name, _) in &table.columns {
        header.push_str(&format!("property float {name}\n"));
    }
    header.push_str("end_header\n");
    let columns: Vec<&[f32]> = table.columns.iter().map(|(_, v)| v.as_slice()).collect();
    write_atomic(path, |w| {
        w.write_all(header.as_bytes())?;
        let mut rows = Vec::with_capacity(BLOCK_ROWS * columns.len() * 4);
        for start in (0..table.count).step_by(BLOCK_ROWS) {
            rows.clear();
            for row in start..(start + BLOCK_ROWS).min(table.count) {
                for column in &columns {
                    rows.extend_from_slice(&column[row].to_le_bytes());
                }
            }
            w.write_all(&rows)?;
        }
        Ok(())
    })
}

/// Rows per block when transposing between rows and columns: small enough
/// that a block of a 62-property file (~250 KB) stays in the L2 cache.
const BLOCK_ROWS: usize = 1024;

// ---------------------------------------------------------------------------
// Gaussian splats

/// Zeroth-order spherical-harmonic constant: the colour of a splat seen
/// from any direction is `0.5 + SH_C0 · f_dc` plus the higher bands.
pub const SH_C0: f32 = 0.282_094_8;

/// Property names of the 3DGS layout (the `f_rest_*` block aside).
const POSITION: [&str; 3] = ["x", "y", "z"];
const NORMAL: [&str; 3] = ["nx", "ny", "nz"];
const SH_DC: [&str; 3] = ["f_dc_0", "f_dc_1", "f_dc_2"];
const OPACITY: &str = "opacity";
const SCALE: [&str; 3] = ["scale_0", "scale_1", "scale_2"];
const ROTATION: [&str; 4] = ["rot_0", "rot_1", "rot_2", "rot_3"];
const REST_PREFIX: &str = "f_rest_";

/// Gaussian splats in the 3DGS layout, one entry per splat in each column,
/// values as the trainer stores them (log scales, logit opacity, raw
/// quaternions) so that a read–write round trip is exact.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GaussianSplats {
    pub positions: Vec<[f32; 3]>,
    /// Degree-0 SH coefficients (`f_dc_0..2`), one per colour channel.
    pub sh_dc: Vec<[f32; 3]>,
    /// Higher SH bands, [`sh_rest_count`]`(sh_degree)` values per splat in
    /// PLY order (`f_rest_0..`): all red coefficients, then green, then blue.
    pub sh_rest: Vec<f32>,
    /// SH degree, 0 to 3.
    pub sh_degree: u32,
    /// Opacity before the sigmoid (logit).
    pub opacity: Vec<f32>,
    /// Natural logarithm of the standard deviations along the three axes.
    pub scales: Vec<[f32; 3]>,
    /// Rotation quaternion `w, x, y, z` (`rot_0..3`), not normalised.
    pub rotations: Vec<[f32; 4]>,
    /// Any other vertex properties (except `nx ny nz`), kept for round trips.
    pub extra: Vec<(String, Vec<f32>)>,
}

/// Number of `f_rest_*` values per splat for SH degree `degree`: three
/// colour channels times `(degree + 1)² − 1` coefficients.
pub fn sh_rest_count(degree: u32) -> usize {
    3 * ((degree as usize + 1).pow(2) - 1)
}

impl GaussianSplats {
    /// Number of splats.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether there are no splats.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Checks that every column has one entry per splat (and `sh_rest` its
    /// [`sh_rest_count`] per splat) and that extra property names do not
    /// clash with standard ones; `Err` says what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.len();
        if self.sh_degree > 3 {
            return Err(format!("SH degree {} is not between 0 and 3", self.sh_degree));
        }
        let rest = sh_rest_count(self.sh_degree);
        let lengths = [
            ("sh_dc", self.sh_dc.len(), n),
            ("opacity", self.opacity.len(), n),
            ("scales", self.scales.len(), n),
            ("rotations", self.rotations.len(), n),
            ("sh_rest", self.sh_rest.len(), n * rest),
        ];
        for (field, len, want) in lengths {
            if len != want {
                return Err(format!("{field} has {len} values, expected {want} for {n} splats"));
            }
        }
        for (name, values) in &self.extra {
            if is_standard_property(name) {
                return Err(format!("extra property '{name}' clashes with a standard 3DGS property"));
            }
            if values.len() != n {
                return Err(format!("extra property '{name}' has {} values for {n} splats", values.len()));
            }
        }
        Ok(())
    }

    /// Checks that `table` holds valid splats (required properties present,
    /// finite geometry, a known SH degree) and returns the SH degree, without
    /// converting anything: for callers that only pass the columns on.
    pub fn check_table(table: &PlyTable, path: &Path) -> Result<u32> {
        Ok(Self::table_layout(table, path)?.0)
    }

    /// The SH degree and `f_rest_*` columns in order, once `table` is checked.
    fn table_layout<'t>(table: &'t PlyTable, path: &Path) -> Result<(u32, Vec<&'t [f32]>)> {
        let bad = |message: String| SceneError::invalid(path, message);
        if let Some(problem) = table.problem() {
            return Err(bad(problem));
        }
        let missing: Vec<&str> = required_properties().filter(|n| table.column(n).is_none()).collect();
        if !missing.is_empty() {
            return Err(bad(format!("missing vertex properties: {}", missing.join(", "))));
        }
        let column = |name: &str| table.column(name).unwrap_or_default();
        let first_non_finite = POSITION
            .iter()
            .chain(&SCALE)
            .chain(&ROTATION)
            .filter_map(|name| column(name).iter().position(|v| !v.is_finite()).map(|i| (i, *name)))
            .min_by_key(|&(i, _)| i);
        if let Some((i, name)) = first_non_finite {
            return Err(bad(format!("splat {i}: {name} is {}", column(name)[i])));
        }

        let rest_count = table.columns.iter().filter(|(n, _)| n.starts_with(REST_PREFIX)).count();
        let sh_degree = (0..=3).find(|&d| sh_rest_count(d) == rest_count).ok_or_else(|| {
            bad(format!("{rest_count} f_rest_* properties; expected 0, 9, 24 or 45 (SH degree 0, 1, 2 or 3)"))
        })?;
        let rest_names: Vec<String> = (0..rest_count).map(|i| format!("{REST_PREFIX}{i}")).collect();
        let rest_columns = rest_names
            .iter()
            .map(|name| {
                table.column(name).ok_or_else(|| {
                    bad(format!(
                        "f_rest_* properties must be numbered f_rest_0 to f_rest_{}; '{name}' is missing",
                        rest_count - 1
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((sh_degree, rest_columns))
    }

    /// Interprets the vertex properties of a PLY table, found by name.
    /// `path` names the file in errors: missing properties, an `f_rest_*`
    /// count that is no SH degree, or a non-finite position, scale or
    /// rotation (other values may be non-finite and are kept as they are).
    pub fn from_table(table: &PlyTable, path: &Path) -> Result<Self> {
        let (sh_degree, rest_columns) = Self::table_layout(table, path)?;
        let column = |name: &str| table.column(name).unwrap_or_default();
        let extra = table.columns.iter().filter(|(name, _)| !is_standard_property(name)).cloned().collect();
        Ok(Self {
            positions: gather(POSITION.map(column)),
            sh_dc: gather(SH_DC.map(column)),
            sh_rest: interleave(&rest_columns, table.count),
            sh_degree,
            opacity: column(OPACITY).to_vec(),
            scales: gather(SCALE.map(column)),
            rotations: gather(ROTATION.map(column)),
            extra,
        })
    }

    /// The splats as a PLY table in the standard 3DGS order: `x y z nx ny nz
    /// f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3`, then the extras.
    /// Normals are zeros, as 3DGS writes them. Call [`Self::validate`]
    /// first: columns of an inconsistent value come out with differing
    /// lengths, which [`write_ply_table`] rejects.
    pub fn to_table(&self) -> PlyTable {
        let n = self.len();
        let rest = sh_rest_count(self.sh_degree);
        let rest_columns = fill_columns_blocked(n, rest, |first_row, outs| {
            let rows = self.sh_rest.chunks_exact(rest).skip(first_row);
            for (j, out) in outs.iter_mut().enumerate() {
                for (o, row) in out.iter_mut().zip(rows.clone()) {
                    *o = row[j];
                }
            }
        });
        let named = |names: &[&str], columns: Vec<Vec<f32>>| -> Vec<(String, Vec<f32>)> {
            names.iter().map(|n| n.to_string()).zip(columns).collect()
        };
        let mut columns = named(&POSITION, scatter(&self.positions).into());
        columns.extend(named(&NORMAL, vec![vec![0.0; n]; 3]));
        columns.extend(named(&SH_DC, scatter(&self.sh_dc).into()));
        columns.extend((0..rest).map(|i| format!("{REST_PREFIX}{i}")).zip(rest_columns));
        columns.push((OPACITY.to_string(), self.opacity.clone()));
        columns.extend(named(&SCALE, scatter(&self.scales).into()));
        columns.extend(named(&ROTATION, scatter(&self.rotations).into()));
        columns.extend(self.extra.iter().cloned());
        PlyTable { count: n, columns }
    }

    /// Display colour of each splat: the view-independent SH colour
    /// `0.5 + SH_C0 · f_dc`, clamped to `[0, 1]`, taken as sRGB (as 3DGS
    /// trains on sRGB images) and converted to linear for a renderer; alpha
    /// is `sigmoid(opacity)`.
    pub fn display_rgba_linear(&self) -> Vec<[f32; 4]> {
        self.sh_dc.iter().zip(&self.opacity).map(|(dc, &opacity)| display_rgba_linear(*dc, opacity)).collect()
    }

    /// Display radius of each splat: twice the geometric mean of its three
    /// standard deviations (`exp` of the mean log-scale). Scales are one
    /// sigma, so this radius covers about two sigma, where the splat has
    /// faded to ~14% and most of its visible footprint lies inside.
    pub fn display_radius(&self) -> Vec<f32> {
        self.scales.iter().map(|s| display_radius(*s)).collect()
    }
}

/// One splat's display colour: see [`GaussianSplats::display_rgba_linear`].
pub fn display_rgba_linear(sh_dc: [f32; 3], opacity: f32) -> [f32; 4] {
    let [r, g, b] = sh_dc.map(|c| srgb_to_linear((0.5 + SH_C0 * c).clamp(0.0, 1.0)));
    [r, g, b, sigmoid(opacity)]
}

/// One splat's display radius from its log-scales: see [`GaussianSplats::display_radius`].
pub fn display_radius(log_scales: [f32; 3]) -> f32 {
    2.0 * ((log_scales[0] + log_scales[1] + log_scales[2]) / 3.0).exp()
}

/// Reads a 3DGS `.ply` file.
pub fn read_splats(path: &Path) -> Result<GaussianSplats> {
    GaussianSplats::from_table(&read_ply_table(path)?, path)
}

/// Writes splats as a standard 3DGS `.ply` file (binary little-endian
/// floats), atomically.
pub fn write_splats(path: &Path, splats: &GaussianSplats) -> Result<()> {
    splats.validate().map_err(|problem| SceneError::invalid(path, problem))?;
    write_ply_table(path, &splats.to_table())
}

/// The logistic function, which turns a stored opacity logit into opacity.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn srgb_to_linear(c: f32) -> f32 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// The properties [`GaussianSplats::from_table`] requires.
fn required_properties() -> impl Iterator<Item = &'static str> {
    POSITION.into_iter().chain(SH_DC).chain([OPACITY]).chain(SCALE).chain(ROTATION)
}

/// Whether `name` is one of the properties [`GaussianSplats`] interprets or
/// writes itself (normals).
fn is_standard_property(name: &str) -> bool {
    required_properties().chain(NORMAL).any(|n| n == name) || name.starts_with(REST_PREFIX)
}

/// Zips `W` equally long columns into rows.
fn gather<const W: usize>(columns: [&[f32]; W]) -> Vec<[f32; W]> {
    let count = columns.iter().map(|c| c.len()).min().unwrap_or(0);
    (0..count).map(|i| columns.map(|c| c[i])).collect()
}

/// Splits rows of `W` values into `W` columns.
fn scatter<const W: usize>(rows: &[[f32; W]]) -> [Vec<f32>; W] {
    std::array::from_fn(|j| rows.iter().map(|row| row[j]).collect())
}

// ---------------------------------------------------------------------------
// Header

enum Format {
    Ascii,
    Binary { big_endian: bool },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scalar {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl Scalar {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "char" | "int8" => Self::I8,
            "uchar" | "uint8" => Self::U8,
            "short" | "int16" => Self::I16,
            "ushort" | "uint16" => Self::U16,
            "int" | "int32" => Self::I32,
            "uint" | "uint32" => Self::U32,
            "float" | "float32" => Self::F32,
            "double" | "float64" => Self::F64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    /// Decodes one value from the start of `b`, which holds at least
    /// [`Scalar::size`] bytes.
    fn decode(self, b: &[u8], big_endian: bool) -> f64 {
        fn le<const N: usize>(b: &[u8], big_endian: bool) -> [u8; N] {
            let mut a: [u8; N] = std::array::from_fn(|i| b[i]);
            if big_endian {
                a.reverse();
            }
            a
        }
        match self {
            Self::I8 => f64::from(i8::from_le_bytes(le(b, big_endian))),
            Self::U8 => f64::from(b[0]),
            Self::I16 => f64::from(i16::from_le_bytes(le(b, big_endian))),
            Self::U16 => f64::from(u16::from_le_bytes(le(b, big_endian))),
            Self::I32 => f64::from(i32::from_le_bytes(le(b, big_endian))),
            Self::U32 => f64::from(u32::from_le_bytes(le(b, big_endian))),
            Self::F32 => f64::from(f32::from_le_bytes(le(b, big_endian))),
            Self::F64 => f64::from_le_bytes(le(b, big_endian)),
        }
    }
}

enum Kind {
    Scalar(Scalar),
    List { len: Scalar, item: Scalar },
}

struct Property {
    name: String,
    kind: Kind,
}

struct Element {
    name: String,
    count: usize,
    props: Vec<Property>,
}

impl Element {
    fn is_vertex(&self) -> bool {
        self.name == "vertex"
    }

    fn has_lists(&self) -> bool {
        self.props.iter().any(|p| matches!(p.kind, Kind::List { .. }))
    }

    /// The scalar properties with their byte offsets in a row of scalars
    /// only (lists removed), and that row's size.
    fn scalar_layout(&self) -> (Vec<(usize, Scalar)>, usize) {
        let mut offset = 0;
        let layout = self
            .props
            .iter()
            .filter_map(|p| match p.kind {
                Kind::Scalar(s) => {
                    offset += s.size();
                    Some((offset - s.size(), s))
                }
                Kind::List { .. } => None,
            })
            .collect();
        (layout, offset)
    }

    /// The fewest bytes a binary row can take (lists empty).
    fn min_row_bytes(&self) -> usize {
        self.props
            .iter()
            .map(|p| match p.kind {
                Kind::Scalar(s) | Kind::List { len: s, .. } => s.size(),
            })
            .sum()
    }

    fn scalar_names(&self) -> impl Iterator<Item = &str> {
        self.props.iter().filter(|p| matches!(p.kind, Kind::Scalar(_))).map(|p| p.name.as_str())
    }
}

struct Header {
    format: Format,
    elements: Vec<Element>,
    /// Byte offset of the data after `end_header`.
    body_start: usize,
}

fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    if first_line.trim_ascii() != b"ply" {
        return Err("not a PLY file (it does not start with a \"ply\" line)".into());
    }
    let mut format = None;
    let mut elements: Vec<Element> = Vec::new();
    let mut line_end = 0;
    for (index, raw) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        line_end += raw.len();
        if index == 0 {
            continue; // the "ply" line, checked above
        }
        let line_no = index + 1;
        let line = std::str::from_utf8(raw).map_err(|_| format!("PLY header line {line_no} is not UTF-8 text"))?;
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let err = |what: &str| format!("PLY header line {line_no} ({:?}): {what}", line.trim());
        match words.as_slice() {
            ["end_header"] => {
                let format = format.ok_or_else(|| "PLY header has no format line".to_string())?;
                match elements.iter().find(|e| e.is_vertex()) {
                    None => return Err("PLY file has no 'vertex' element".into()),
                    Some(v) if v.scalar_names().next().is_none() => {
                        return Err("the 'vertex' element has no scalar properties".into())
                    }
                    Some(_) => {}
                }
                return Ok(Header { format, elements, body_start: line_end });
            }
            [] | ["comment" | "obj_info", ..] => {}
            ["format", kind, _version] => {
                format = Some(match *kind {
                    "ascii" => Format::Ascii,
                    "binary_little_endian" => Format::Binary { big_endian: false },
                    "binary_big_endian" => Format::Binary { big_endian: true },
                    other => {
                        return Err(err(&format!(
                            "unknown format '{other}'; expected ascii, binary_little_endian or binary_big_endian"
                        )))
                    }
                });
            }
            ["element", name, count] => {
                let count = count.parse().map_err(|_| err("element count is not a whole number"))?;
                if *name == "vertex" && elements.iter().any(Element::is_vertex) {
                    return Err(err("second 'vertex' element"));
                }
                elements.push(Element { name: name.to_string(), count, props: Vec::new() });
            }
            ["property", rest @ ..] => {
                let element = elements.last_mut().ok_or_else(|| err("property before any element"))?;
                let unknown = |t: &str| err(&format!("unknown property type '{t}'"));
                let (kind, name) = match rest {
                    ["list", len, item, name] => {
                        let len = Scalar::parse(len).ok_or_else(|| unknown(len))?;
                        if matches!(len, Scalar::F32 | Scalar::F64) {
                            return Err(err("list length type must be an integer type"));
                        }
                        (Kind::List { len, item: Scalar::parse(item).ok_or_else(|| unknown(item))? }, name)
                    }
                    [ty, name] => (Kind::Scalar(Scalar::parse(ty).ok_or_else(|| unknown(ty))?), name),
                    _ => return Err(err("expected 'property TYPE NAME' or 'property list TYPE TYPE NAME'")),
                };
                if element.props.iter().any(|p| p.name == *name) {
                    return Err(err(&format!("property '{name}' appears twice in element '{}'", element.name)));
                }
                element.props.push(Property { name: name.to_string(), kind });
            }
            _ => return Err(err("not a PLY header line")),
        }
    }
    Err("PLY header has no end_header line (file truncated or not a PLY file)".into())
}

// ---------------------------------------------------------------------------
// Body

/// Reads the binary body: every element is bounds-checked and skipped, the
/// vertex element's scalar properties are decoded into columns.
fn read_binary_body(
    body: &[u8],
    body_start: usize,
    elements: &[Element],
    big_endian: bool,
) -> Result<Vec<(String, Vec<f32>)>, String> {
    let mut pos = 0;
    let mut columns = Vec::new();
    for element in elements {
        let absurd = || {
            format!(
                "element '{}' declares {} rows, impossible in a file of {} bytes",
                element.name,
                element.count,
                body_start + body.len()
            )
        };
        let min_bytes = element.count.checked_mul(element.min_row_bytes()).ok_or_else(absurd)?;
        let truncated = |needed: usize| {
            format!(
                "truncated PLY data: element '{}' ({} rows) needs at least {} bytes from byte {}, \
                 expected a file of at least {} bytes but found {}",
                element.name,
                element.count,
                needed,
                body_start + pos,
                body_start + pos + needed,
                body_start + body.len()
            )
        };
        if min_bytes > body.len() - pos {
            return Err(truncated(min_bytes));
        }
        let (layout, stride) = element.scalar_layout();
        if element.has_lists() {
            let (end, packed) = walk_list_rows(body, pos, element, big_endian, element.is_vertex()).map_err(|row| {
                format!(
                    "truncated PLY data: row {row} of the {} rows of element '{}' runs past the end of the \
                     file ({} bytes) or has a negative list length",
                    element.count,
                    element.name,
                    body_start + body.len()
                )
            })?;
            if element.is_vertex() {
                columns = decode_rows(&packed, element, &layout, stride, big_endian);
            }
            pos = end;
        } else {
            if element.is_vertex() {
                columns = decode_rows(&body[pos..pos + min_bytes], element, &layout, stride, big_endian);
            }
            pos += min_bytes;
        }
    }
    Ok(columns)
}

/// Walks the rows of an element with list properties, checking each against
/// the end of `body`. Returns where the element ends and, when `keep` is
/// set, its scalar properties packed into fixed-size rows. On running out of
/// data, returns the index of the incomplete row.
fn walk_list_rows(
    body: &[u8],
    mut pos: usize,
    element: &Element,
    big_endian: bool,
    keep: bool,
) -> Result<(usize, Vec<u8>), usize> {
    let mut packed = Vec::new();
    for row in 0..element.count {
        for prop in &element.props {
            let size = match prop.kind {
                Kind::Scalar(s) => s.size(),
                Kind::List { len, item } => {
                    let bytes = body.get(pos..pos + len.size()).ok_or(row)?;
                    let n = len.decode(bytes, big_endian);
                    if n < 0.0 {
                        return Err(row);
                    }
                    (n as usize).checked_mul(item.size()).and_then(|b| b.checked_add(len.size())).ok_or(row)?
                }
            };
            let bytes = pos.checked_add(size).and_then(|end| body.get(pos..end)).ok_or(row)?;
            if keep && matches!(prop.kind, Kind::Scalar(_)) {
                packed.extend_from_slice(bytes);
            }
            pos += size;
        }
    }
    Ok((pos, packed))
}

/// Transposes `rows` (fixed-size rows of `stride` bytes holding the scalars
/// of `layout`) into one column per scalar property.
fn decode_rows(
    rows: &[u8],
    element: &Element,
    layout: &[(usize, Scalar)],
    stride: usize,
    big_endian: bool,
) -> Vec<(String, Vec<f32>)> {
    let columns = fill_columns_blocked(element.count, layout.len(), |first_row, outs| {
        let block = &rows[first_row * stride..(first_row + outs[0].len()) * stride];
        for (out, &(offset, ty)) in outs.iter_mut().zip(layout) {
            decode_column(out, block, stride, offset, ty, big_endian);
        }
    });
    element.scalar_names().map(str::to_string).zip(columns).collect()
}

/// Decodes one property of every row in `rows` into `out`.
fn decode_column(out: &mut [f32], rows: &[u8], stride: usize, offset: usize, ty: Scalar, big_endian: bool) {
    let rows = rows.chunks_exact(stride);
    if ty == Scalar::F32 && !big_endian {
        // The common case (3DGS output), kept free of per-value dispatch.
        for (o, row) in out.iter_mut().zip(rows) {
            *o = f32::from_le_bytes(std::array::from_fn(|i| row[offset + i]));
        }
    } else {
        for (o, row) in out.iter_mut().zip(rows) {
            *o = ty.decode(&row[offset..], big_endian) as f32;
        }
    }
}

/// Allocates `width` columns of `count` values and fills them in parallel,
/// one block of [`BLOCK_ROWS`] rows at a time: `fill(first_row, outs)` gets
/// that block's slice of every column (`width` must be at least 1 for
/// `fill` to be called).
fn fill_columns_blocked<F>(count: usize, width: usize, fill: F) -> Vec<Vec<f32>>
where
    F: Fn(usize, &mut [&mut [f32]]) + Sync,
{
    let mut columns: Vec<Vec<f32>> = (0..width).map(|_| vec![0.0; count]).collect();
    let mut blocks: Vec<Vec<&mut [f32]>> = (0..count.div_ceil(BLOCK_ROWS)).map(|_| Vec::with_capacity(width)).collect();
    for column in &mut columns {
        for (block, chunk) in blocks.iter_mut().zip(column.chunks_mut(BLOCK_ROWS)) {
            block.push(chunk);
        }
    }
    if width > 0 {
        blocks.into_par_iter().enumerate().for_each(|(i, mut outs)| fill(i * BLOCK_ROWS, &mut outs));
    }
    columns
}

/// Interleaves `columns` (each `count` long) into rows of `columns.len()`
/// values, the inverse of [`fill_columns_blocked`].
fn interleave(columns: &[&[f32]], count: usize) -> Vec<f32> {
    let width = columns.len();
    let mut rows = vec![0.0f32; count * width];
    if width > 0 {
        rows.par_chunks_mut(BLOCK_ROWS * width).enumerate().for_each(|(block, chunk)| {
            let first = block * BLOCK_ROWS;
            for (j, column) in columns.iter().enumerate() {
                for (row, &v) in chunk.chunks_exact_mut(width).zip(&column[first..]) {
                    row[j] = v;
                }
            }
        });
    }
    rows
}

/// Reads the ASCII body: whitespace-separated numbers, row after row.
fn read_ascii_body(body: &[u8], elements: &[Element]) -> Result<Vec<(String, Vec<f32>)>, String> {
    let mut tokens = body.split(u8::is_ascii_whitespace).filter(|t| !t.is_empty());
    let mut columns = Vec::new();
    for element in elements {
        // Every value takes at least one character and one separator.
        let min_bytes = element.count.saturating_mul(2 * element.props.len());
        if min_bytes > body.len() + 1 {
            return Err(format!(
                "element '{}' declares {} rows of {} values, more than {} bytes of ASCII data can hold",
                element.name,
                element.count,
                element.props.len(),
                body.len()
            ));
        }
        let keep = element.is_vertex();
        let mut values: Vec<Vec<f32>> =
            if keep { element.scalar_names().map(|_| Vec::with_capacity(element.count)).collect() } else { Vec::new() };
        for row in 0..element.count {
            let mut next = |prop: &str| {
                let token = tokens.next().ok_or_else(|| {
                    format!(
                        "truncated ASCII PLY data: element '{}' ends in row {row} of {}, before property '{prop}'",
                        element.name, element.count
                    )
                })?;
                std::str::from_utf8(token).ok().and_then(|t| t.parse::<f64>().ok()).ok_or_else(|| {
                    format!(
                        "element '{}' row {row} property '{prop}': {:?} is not a number",
                        element.name,
                        String::from_utf8_lossy(token)
                    )
                })
            };
            let mut column = values.iter_mut();
            for prop in &element.props {
                let value = next(&prop.name)?;
                match prop.kind {
                    Kind::Scalar(_) => {
                        if let Some(column) = column.next() {
                            column.push(value as f32);
                        }
                    }
                    Kind::List { .. } => {
                        if !(value >= 0.0 && value.fract() == 0.0) {
                            return Err(format!(
                                "element '{}' row {row} list '{}' has length {value}",
                                element.name, prop.name
                            ));
                        }
                        for _ in 0..value as usize {
                            next(&prop.name)?;
                        }
                    }
                }
            }
        }
        if keep {
            columns = element.scalar_names().map(str::to_string).zip(values).collect();
        }
    }
    Ok(columns)
}
