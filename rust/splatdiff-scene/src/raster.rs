//! A CPU z-buffer rasterizer that turns a triangle mesh into exact geometry
//! passes (depth, normals, object mask) for a camera.
//!
//! The turntable capture takes these passes from the mesh rather than from
//! Blender's render passes: they are then exact (no anti-aliased depth, no
//! sampling noise), float, identical for every render engine (Workbench and
//! Eevee lack some passes Cycles has) and for every Blender version, and they
//! follow the conventions of [`crate::camera`] by construction. The colour
//! still comes from Blender's renderer, with the user's look.
//!
//! Each pixel is sampled once, at its centre. Triangles are clipped against
//! the near plane, depth and normals are interpolated perspective-correctly,
//! and the nearest surface wins. Both faces of a triangle are drawn (an open
//! mesh seen from behind still occludes), and normals are the mesh's own
//! corner normals, not flipped towards the camera.

use glam::{Vec2, Vec3};

use crate::camera::Camera;

/// A triangle mesh in world space.
#[derive(Clone, Debug, Default)]
pub struct TriangleMesh {
    pub positions: Vec<Vec3>,
    /// Vertex indices, counter-clockwise seen from the front.
    pub triangles: Vec<[u32; 3]>,
    /// World-space normal at each corner of each triangle (smooth or flat
    /// shading as the modeller defined it). Empty: flat face normals.
    pub corner_normals: Vec<[Vec3; 3]>,
}

impl TriangleMesh {
    /// Checks indices and lengths; `None` when usable, else what is wrong.
    pub fn problem(&self) -> Option<String> {
        if self.triangles.is_empty() {
            return Some("the mesh has no faces".into());
        }
        if !self.corner_normals.is_empty() && self.corner_normals.len() != self.triangles.len() {
            return Some(format!(
                "{} corner-normal triples for {} triangles",
                self.corner_normals.len(),
                self.triangles.len()
            ));
        }
        let n = self.positions.len() as u32;
        if let Some((t, tri)) = self.triangles.iter().enumerate().find(|(_, t)| t.iter().any(|&i| i >= n)) {
            return Some(format!("triangle {t} uses vertex {tri:?}, but the mesh has {n} vertices"));
        }
        if let Some(i) = self.positions.iter().position(|p| !p.is_finite()) {
            return Some(format!("vertex {i} has a non-finite position"));
        }
        None
    }
}

/// Geometry passes of one view, row-major from the top row.
#[derive(Clone, Debug, PartialEq)]
pub struct GeometryPasses {
    pub width: u32,
    pub height: u32,
    /// Metres along the view axis; 0 where no surface is hit.
    pub depth: Vec<f32>,
    /// World-space unit normal; zero where no surface is hit.
    pub normal: Vec<[f32; 3]>,
    /// 255 where the mesh covers the pixel centre, else 0.
    pub mask: Vec<u8>,
}

/// Near clipping distance, metres along the view axis.
const NEAR: f32 = 1e-4;

/// One vertex in camera space with the attribute carried through clipping.
#[derive(Clone, Copy)]
struct ClipVertex {
    cam: Vec3,
    normal: Vec3,
}

/// Rasterizes `mesh` as seen by `camera`. `mesh` must pass [`TriangleMesh::problem`].
pub fn rasterize(mesh: &TriangleMesh, camera: &Camera) -> GeometryPasses {
    let (w, h) = (camera.intrinsics.width, camera.intrinsics.height);
    let pixels = w as usize * h as usize;
    let mut passes = GeometryPasses {
        width: w,
        height: h,
        depth: vec![0.0; pixels],
        normal: vec![[0.0; 3]; pixels],
        mask: vec![0; pixels],
    };
    let world_to_cam = camera.world_to_camera();
    let cam_positions: Vec<Vec3> = mesh.positions.iter().map(|&p| world_to_cam.transform_point3(p)).collect();
    let mut zbuffer = vec![f32::INFINITY; pixels];

    for (t, tri) in mesh.triangles.iter().enumerate() {
        let corners = tri.map(|i| cam_positions[i as usize]);
        let normals = match mesh.corner_normals.get(t) {
            Some(n) => *n,
            None => {
                let world = tri.map(|i| mesh.positions[i as usize]);
                [(world[1] - world[0]).cross(world[2] - world[0]).normalize_or_zero(); 3]
            }
        };
        let polygon = clip_near([0, 1, 2].map(|k| ClipVertex { cam: corners[k], normal: normals[k] }));
        for k in 1..polygon.len().saturating_sub(1) {
            draw_triangle([polygon[0], polygon[k], polygon[k + 1]], camera, &mut zbuffer, &mut passes);
        }
    }
    passes
}

/// Sutherland–Hodgman clip of a triangle against the plane `depth = NEAR`.
fn clip_near(tri: [ClipVertex; 3]) -> Vec<ClipVertex> {
    let inside = |v: &ClipVertex| -v.cam.z >= NEAR;
    if tri.iter().all(inside) {
        return tri.to_vec();
    }
    let mut out = Vec::with_capacity(4);
    for k in 0..3 {
        let (a, b) = (tri[k], tri[(k + 1) % 3]);
        if inside(&a) {
            out.push(a);
        }
        if inside(&a) != inside(&b) {
            let (da, db) = (-a.cam.z - NEAR, -b.cam.z - NEAR);
            let s = da / (da - db);
            out.push(ClipVertex { cam: a.cam.lerp(b.cam, s), normal: a.normal.lerp(b.normal, s) });
        }
    }
    out
}

fn draw_triangle(v: [ClipVertex; 3], camera: &Camera, zbuffer: &mut [f32], passes: &mut GeometryPasses) {
    let Some(projected) = v.iter().map(|c| camera.project_camera_space(c.cam)).collect::<Option<Vec<_>>>() else {
        return;
    };
    let p: [Vec2; 3] = [projected[0].0, projected[1].0, projected[2].0];
    let inv_depth = [1.0 / projected[0].1, 1.0 / projected[1].1, 1.0 / projected[2].1];
    let area = edge(p[0], p[1], p[2]);
    if area.abs() < 1e-12 || !area.is_finite() {
        return;
    }
    let (w, h) = (passes.width as f32, passes.height as f32);
    let min = p[0].min(p[1]).min(p[2]);
    let max = p[0].max(p[1]).max(p[2]);
    // Pixel (i, j) has its centre at (i + 0.5, j + 0.5).
    let x0 = (min.x - 0.5).ceil().max(0.0) as u32;
    let y0 = (min.y - 0.5).ceil().max(0.0) as u32;
    let x1 = (max.x - 0.5).floor().min(w - 1.0);
    let y1 = (max.y - 0.5).floor().min(h - 1.0);
    if x1 < 0.0 || y1 < 0.0 {
        return;
    }
    let (x1, y1) = (x1 as u32, y1 as u32);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let c = Vec2::new(x as f32 + 0.5, y as f32 + 0.5);
            let b = [edge(p[1], p[2], c) / area, edge(p[2], p[0], c) / area, edge(p[0], p[1], c) / area];
            if b.iter().any(|&b| b < 0.0) {
                continue;
            }
            // Screen-space barycentrics interpolate 1/depth linearly.
            let inv = b[0] * inv_depth[0] + b[1] * inv_depth[1] + b[2] * inv_depth[2];
            let depth = 1.0 / inv;
            let i = y as usize * passes.width as usize + x as usize;
            if depth.partial_cmp(&zbuffer[i]) != Some(std::cmp::Ordering::Less) {
                continue;
            }
            zbuffer[i] = depth;
            let persp = [b[0] * inv_depth[0] * depth, b[1] * inv_depth[1] * depth, b[2] * inv_depth[2] * depth];
            let n = (v[0].normal * persp[0] + v[1].normal * persp[1] + v[2].normal * persp[2]).normalize_or_zero();
            passes.depth[i] = depth;
            passes.normal[i] = n.to_array();
            passes.mask[i] = 255;
        }
    }
}

/// Twice the signed area of (a, b, c); positive when c is left of a→b.
fn edge(a: Vec2, b: Vec2, c: Vec2) -> f32 {
    (b.x - a.x) * (c.y - a.y) - (b.y - a.y) * (c.x - a.x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::Intrinsics;

    fn cube(center: Vec3, half: f32) -> TriangleMesh {
        let mut positions = vec![];
        for i in 0..8 {
            let s = |bit: i32| if i & bit != 0 { half } else { -half };
            positions.push(center + Vec3::new(s(1), s(2), s(4)));
        }
        let quads = [[0, 2, 3, 1], [4, 5, 7, 6], [0, 1, 5, 4], [2, 6, 7, 3], [0, 4, 6, 2], [1, 3, 7, 5]];
        let triangles = quads.iter().flat_map(|q| [[q[0], q[1], q[2]], [q[0], q[2], q[3]]]).collect();
        TriangleMesh { positions, triangles, corner_normals: vec![] }
    }

    fn camera() -> Camera {
        let k = Intrinsics { fx: 60.0, fy: 60.0, cx: 32.0, cy: 32.0, width: 64, height: 64 };
        Camera::look_at(Vec3::new(0.0, -4.0, 0.0), Vec3::ZERO, k)
    }

    #[test]
    fn a_cube_face_on_has_exact_depth_normals_and_extent() {
        let mesh = cube(Vec3::ZERO, 0.5);
        assert!(mesh.problem().is_none());
        let p = rasterize(&mesh, &camera());
        let centre = 32 * 64 + 32;
        assert!((p.depth[centre] - 3.5).abs() < 1e-4, "front face at 3.5 m: {}", p.depth[centre]);
        let n = Vec3::from(p.normal[centre]);
        assert!((n - Vec3::NEG_Y).length() < 1e-4, "front face faces -Y: {n}");
        // The face spans ±0.5 m at 3.5 m: ±60·0.5/3.5 = ±8.57 px around x = 32,
        // so pixel centres x + 0.5 in [23.43, 40.57]: pixels 23 to 40.
        let row: Vec<u8> = (0..64).map(|x| p.mask[32 * 64 + x]).collect();
        let covered: Vec<usize> = (0..64).filter(|&x| row[x] == 255).collect();
        assert_eq!((covered[0], *covered.last().unwrap()), (23, 40), "{covered:?}");
        assert_eq!(p.mask[0], 0);
        assert_eq!(p.depth[0], 0.0);
    }

    #[test]
    fn depth_matches_projection_of_vertices_and_nearest_wins() {
        let mut mesh = cube(Vec3::new(0.2, 0.0, 0.1), 0.3);
        let back = cube(Vec3::new(0.2, 1.0, 0.1), 0.6);
        let off = mesh.positions.len() as u32;
        mesh.positions.extend(back.positions);
        mesh.triangles.extend(back.triangles.iter().map(|t| t.map(|i| i + off)));
        let cam = camera();
        let p = rasterize(&mesh, &cam);
        // A point on the small cube's front face projects to a pixel whose depth is its own.
        let point = Vec3::new(0.25, -0.3, 0.15);
        let (px, d) = cam.project(point).unwrap();
        let i = px.y as usize * 64 + px.x as usize;
        assert!((p.depth[i] - d).abs() < 0.01, "{} vs {d}", p.depth[i]);
    }

    #[test]
    fn triangles_crossing_the_camera_plane_are_clipped_not_dropped() {
        // A large floor passing under and behind the camera.
        let mesh = TriangleMesh {
            positions: vec![
                Vec3::new(-10.0, -10.0, -1.0),
                Vec3::new(10.0, -10.0, -1.0),
                Vec3::new(10.0, 10.0, -1.0),
                Vec3::new(-10.0, 10.0, -1.0),
            ],
            triangles: vec![[0, 1, 2], [0, 2, 3]],
            corner_normals: vec![],
        };
        let p = rasterize(&mesh, &camera());
        assert_eq!(p.mask[63 * 64 + 32], 255, "floor visible at the bottom");
        assert_eq!(p.mask[0], 0, "sky at the top");
        assert!(p.depth.iter().all(|d| d.is_finite() && *d >= 0.0));
    }

    #[test]
    fn bad_meshes_are_described() {
        let mut mesh = cube(Vec3::ZERO, 1.0);
        mesh.triangles.push([0, 1, 99]);
        assert!(mesh.problem().unwrap().contains("vertex"));
        assert!(TriangleMesh::default().problem().unwrap().contains("no faces"));
    }
}
