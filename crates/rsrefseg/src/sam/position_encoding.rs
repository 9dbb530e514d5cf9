//! Random-Fourier position encoding of SAM's prompt encoder (`PositionEmbeddingRandom`).
//!
//! A point `(x, y)` normalised to `[0, 1]` is mapped to `[-1, 1]`, projected by a fixed Gaussian
//! matrix `G (2, F)` and encoded as `[sin(2π·p·G), cos(2π·p·G)]` (2F channels). The same encoding
//! gives the dense PE of the image embedding grid (cell centres) and the sparse point prompts.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use std::f64::consts::PI;

#[derive(Config, Debug)]
pub struct PositionEmbeddingRandomConfig {
    /// Number of random frequencies F; the encoding has 2F channels.
    pub num_pos_feats: usize,
}

impl PositionEmbeddingRandomConfig {
    /// `G ~ N(0, 1)` (SAM's `scale` 1), frozen: upstream it is a buffer, drawn once and never
    /// trained. A model trained from scratch needs the random frequencies — with `G = 0` every
    /// point, box corner and image cell gets the same encoding, so neither the prompts nor the
    /// decoder's image attention know *where* anything is. Checkpoints overwrite it; the
    /// frozen flag survives loading.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PositionEmbeddingRandom<B> {
        let g = Tensor::random([2, self.num_pos_feats], Distribution::Normal(0.0, 1.0), device);
        PositionEmbeddingRandom { positional_encoding_gaussian_matrix: Param::from_tensor(g).set_require_grad(false) }
    }
}

#[derive(Module, Debug)]
pub struct PositionEmbeddingRandom<B: Backend> {
    /// `G`, shape `(2, F)`.
    pub positional_encoding_gaussian_matrix: Param<Tensor<B, 2>>,
}

impl<B: Backend> PositionEmbeddingRandom<B> {
    /// Encode coordinates already normalised to `[0, 1]`.
    ///
    /// # Shapes
    /// - coords: `[b, n, 2]` as `(x, y)` → `[b, n, 2F]`
    pub fn encode(&self, coords: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, _] = coords.dims();
        let [_, f] = self.positional_encoding_gaussian_matrix.dims();
        let g = self.positional_encoding_gaussian_matrix.val().unsqueeze_dim::<3>(0).expand([b, 2, f]);
        let proj = (coords * 2.0 - 1.0).matmul(g) * (2.0 * PI);
        Tensor::cat(vec![proj.clone().sin(), proj.cos()], 2)
    }

    /// Dense encoding of an `h × w` grid of cell centres (`get_dense_pe` / `forward(size)`).
    ///
    /// # Shapes
    /// - output: `[2F, h, w]`
    pub fn dense(&self, [h, w]: [usize; 2]) -> Tensor<B, 3> {
        // Cell centres, computed as the reference does: (cumsum(ones) - 0.5) / size.
        let mut grid = Vec::with_capacity(h * w * 2);
        for i in 0..h {
            for j in 0..w {
                grid.push(((j + 1) as f32 - 0.5) / w as f32);
                grid.push(((i + 1) as f32 - 0.5) / h as f32);
            }
        }
        let device = self.positional_encoding_gaussian_matrix.device();
        let coords = Tensor::<B, 3>::from_data(TensorData::new(grid, [1, h * w, 2]), &device);
        let pe = self.encode(coords);
        let c = pe.dims()[2];
        // (1, h·w, C) -> (C, h, w)
        pe.reshape([h * w, c]).transpose().reshape([c, h, w])
    }

    /// Encode pixel coordinates of an image of size `(height, width)` (`forward_with_coords`).
    ///
    /// # Shapes
    /// - coords: `[b, n, 2]` as `(x, y)` in pixels → `[b, n, 2F]`
    pub fn encode_pixels(&self, coords: Tensor<B, 3>, [height, width]: [usize; 2]) -> Tensor<B, 3> {
        let device = coords.device();
        let size = Tensor::<B, 1>::from_data(TensorData::new(vec![width as f32, height as f32], [2]), &device);
        self.encode(coords / size.reshape([1, 1, 2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

    /// A model built from scratch must tell positions apart (with an all-zero `G` every point
    /// and cell encoded as `[0…0, 1…1]`, which the nano model was once trained with) and must
    /// not train `G` (a buffer upstream).
    #[test]
    fn fresh_encoding_separates_positions_and_is_frozen() {
        let device = Default::default();
        let pe = PositionEmbeddingRandomConfig::new(32).init::<B>(&device);
        assert!(!pe.positional_encoding_gaussian_matrix.is_require_grad());
        let coords = Tensor::<B, 3>::from_data(TensorData::new(vec![10f32, 10., 200., 40., 60., 230.], [1, 3, 2]), &device);
        let e: Vec<f32> = pe.encode_pixels(coords, [256, 256]).into_data().to_vec().unwrap();
        let (a, b, c) = (&e[0..64], &e[64..128], &e[128..192]);
        let dist = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p - q).powi(2)).sum::<f32>().sqrt();
        // Unit-norm halves: distinct positions are far apart on the 2F-sphere of radius √F.
        for (x, y) in [(a, b), (a, c), (b, c)] {
            assert!(dist(x, y) > 2.0, "positions encoded alike: {}", dist(x, y));
        }
        let dense: Vec<f32> = pe.dense([4, 4]).into_data().to_vec().unwrap();
        let first: Vec<f32> = (0..64).map(|ch| dense[ch * 16]).collect();
        let last: Vec<f32> = (0..64).map(|ch| dense[ch * 16 + 15]).collect();
        assert!(dist(&first, &last) > 2.0);
    }
}
