//! The one place that owns strides and axis arithmetic: row-major strides, an axis split of a shape into
//! (outer, axis, inner) blocks, take / slice / zero / per-index reductions along an axis, a 2-D matrix view,
//! and the broadcasting of per-tensor, per-axis and blocked parameters (the `scale` / `zero_point` layouts of
//! ONNX `QuantizeLinear` / `DequantizeLinear`).
//!
//! Every function works on row-major (C order) data. Element `i` of a tensor split at `axis` sits at
//! `i = (o * len + a) * inner + k` with `o` the flat index over the dims before the axis, `a` the index along
//! it and `k` the flat index over the dims after it.

use std::ops::Range;

use bytes::Bytes;

use super::{DataType, Tensor};
use crate::error::{Error, Result};

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid("", msg)
}

/// Row-major strides of `dims` (in elements).
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// `axis` in `-rank..rank` as an index in `0..rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(invalid(format!("axis {axis} out of range for rank {rank}")))
    }
}

/// Dims as `usize`, refusing negative dims and element counts that overflow.
pub fn dims_usize(dims: &[i64]) -> Result<Vec<usize>> {
    let d: Vec<usize> = dims
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| invalid(format!("negative dim in {dims:?}"))))
        .collect::<Result<_>>()?;
    d.iter()
        .try_fold(1usize, |a, b| a.checked_mul(*b))
        .ok_or_else(|| invalid(format!("dims {dims:?} overflow")))?;
    Ok(d)
}

/// What `AxisSplit::reduce` computes over the elements at one index of the axis. Min and max propagate NaN;
/// an index with no elements (a zero-sized other dim) gives NaN for min / max / abs-max and 0 for the sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    Min,
    Max,
    /// max |x|
    AbsMax,
    /// sum |x|
    AbsSum,
    /// sqrt(sum x^2)
    L2,
}

/// A shape seen as `outer x len x inner` around one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisSplit {
    /// Product of the dims before the axis.
    pub outer: usize,
    /// The axis' own dim.
    pub len: usize,
    /// Product of the dims after the axis.
    pub inner: usize,
}

impl AxisSplit {
    /// Split `dims` at `axis` (negative counts from the end).
    pub fn new(dims: &[i64], axis: i64) -> Result<AxisSplit> {
        let d = dims_usize(dims)?;
        let a = normalize_axis(axis, d.len())?;
        Ok(AxisSplit::of(&d, a))
    }

    /// Split checked dims at a checked axis.
    pub fn of(dims: &[usize], axis: usize) -> AxisSplit {
        AxisSplit {
            outer: dims[..axis].iter().product(),
            len: dims[axis],
            inner: dims[axis + 1..].iter().product(),
        }
    }

    pub fn numel(&self) -> usize {
        self.outer * self.len * self.inner
    }

    /// Index along the axis of flat element `i`.
    pub fn index_of(&self, i: usize) -> usize {
        (i / self.inner) % self.len
    }

    fn check_len(&self, n: usize) -> Result<()> {
        if n != self.numel() {
            return Err(invalid(format!(
                "{n} values for a shape of {} x {} x {} elements",
                self.outer, self.len, self.inner
            )));
        }
        Ok(())
    }

    fn check_index(&self, i: usize) -> Result<()> {
        if i >= self.len {
            return Err(invalid(format!(
                "index {i} out of range for an axis of length {}",
                self.len
            )));
        }
        Ok(())
    }

    /// The elements at `indices` along the axis, in that order (repeats allowed); the axis' new length is
    /// `indices.len()`.
    pub fn take<T: Copy>(&self, data: &[T], indices: &[usize]) -> Result<Vec<T>> {
        self.check_len(data.len())?;
        for i in indices {
            self.check_index(*i)?;
        }
        let mut out = Vec::with_capacity(self.outer * indices.len() * self.inner);
        for o in 0..self.outer {
            for &a in indices {
                let start = (o * self.len + a) * self.inner;
                out.extend_from_slice(&data[start..start + self.inner]);
            }
        }
        Ok(out)
    }

    /// The elements at `range` along the axis.
    pub fn slice<T: Copy>(&self, data: &[T], range: Range<usize>) -> Result<Vec<T>> {
        if range.start > range.end || range.end > self.len {
            return Err(invalid(format!(
                "slice {range:?} out of range for an axis of length {}",
                self.len
            )));
        }
        self.take(data, &range.collect::<Vec<_>>())
    }

    /// Set every element at `indices` along the axis to `value`.
    pub fn fill<T: Copy>(&self, data: &mut [T], indices: &[usize], value: T) -> Result<()> {
        self.check_len(data.len())?;
        for i in indices {
            self.check_index(*i)?;
        }
        for o in 0..self.outer {
            for &a in indices {
                let start = (o * self.len + a) * self.inner;
                data[start..start + self.inner].fill(value);
            }
        }
        Ok(())
    }

    /// One value per index of the axis, reducing all elements at that index.
    pub fn reduce(&self, data: &[f64], r: Reduction) -> Result<Vec<f64>> {
        self.check_len(data.len())?;
        let init = match r {
            Reduction::Min => f64::INFINITY,
            Reduction::Max | Reduction::AbsMax => f64::NEG_INFINITY,
            Reduction::AbsSum | Reduction::L2 => 0.0,
        };
        let mut acc = vec![init; self.len];
        for o in 0..self.outer {
            for (a, slot) in acc.iter_mut().enumerate() {
                let start = (o * self.len + a) * self.inner;
                for &x in &data[start..start + self.inner] {
                    *slot = match r {
                        _ if slot.is_nan() => *slot,
                        Reduction::Min | Reduction::Max | Reduction::AbsMax if x.is_nan() => x,
                        Reduction::Min => slot.min(x),
                        Reduction::Max => slot.max(x),
                        Reduction::AbsMax => slot.max(x.abs()),
                        Reduction::AbsSum => *slot + x.abs(),
                        Reduction::L2 => *slot + x * x,
                    };
                }
            }
        }
        if self.outer * self.inner == 0
            && matches!(r, Reduction::Min | Reduction::Max | Reduction::AbsMax)
        {
            acc.fill(f64::NAN);
        }
        if r == Reduction::L2 {
            acc.iter_mut().for_each(|s| *s = s.sqrt());
        }
        Ok(acc)
    }
}

/// Rows x cols of `dims` flattened at `axis` (0..=rank), as ONNX `Flatten`: rows = product of the dims before
/// the axis, cols = product of the dims from the axis on.
pub fn matrix_dims(dims: &[i64], axis: i64) -> Result<(usize, usize)> {
    let d = dims_usize(dims)?;
    let r = d.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(invalid(format!(
            "matrix split axis {axis} out of range for rank {}",
            d.len()
        )));
    }
    let a = a as usize;
    Ok((d[..a].iter().product(), d[a..].iter().product()))
}

/// A row-major matrix over a tensor's values.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix<T> {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<T>,
}

impl<T: Copy> Matrix<T> {
    pub fn new(rows: usize, cols: usize, data: Vec<T>) -> Result<Matrix<T>> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(invalid(format!(
                "{} values for a {rows} x {cols} matrix",
                data.len()
            )));
        }
        Ok(Matrix { rows, cols, data })
    }

    pub fn get(&self, r: usize, c: usize) -> T {
        self.data[r * self.cols + c]
    }

    pub fn row(&self, r: usize) -> &[T] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn rows_iter(&self) -> impl Iterator<Item = &[T]> {
        (0..self.rows).map(|r| self.row(r))
    }

    /// Column `c`, copied.
    pub fn column(&self, c: usize) -> Vec<T> {
        (0..self.rows).map(|r| self.get(r, c)).collect()
    }

    pub fn transpose(&self) -> Matrix<T> {
        let mut data = Vec::with_capacity(self.data.len());
        for c in 0..self.cols {
            data.extend((0..self.rows).map(|r| self.get(r, c)));
        }
        Matrix {
            rows: self.cols,
            cols: self.rows,
            data,
        }
    }
}

/// How a parameter tensor (`scale`, `zero_point`) maps onto the elements of `x`, checked against the ONNX
/// spec of QuantizeLinear / DequantizeLinear (opset 21): per tensor (a scalar or `[1]`), per axis (1-D with
/// the axis' length), or blocked (same rank as `x`, `ceil(len / block_size)` along the axis, the other dims
/// equal to `x`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamLayout {
    PerTensor,
    PerAxis(AxisSplit),
    Blocked {
        split: AxisSplit,
        block: usize,
        blocks: usize,
    },
}

impl ParamLayout {
    /// Check `param_dims` against `x_dims`; `block_size` 0 means not blocked. The error says which rule broke.
    pub fn resolve(
        x_dims: &[i64],
        param_dims: &[i64],
        axis: i64,
        block_size: i64,
    ) -> Result<ParamLayout> {
        let xd = dims_usize(x_dims)?;
        let pd = dims_usize(param_dims)?;
        if block_size < 0 {
            return Err(invalid(format!("negative block_size {block_size}")));
        }
        if block_size == 0 {
            if pd.is_empty() || pd == [1] {
                return Ok(ParamLayout::PerTensor);
            }
            let a = normalize_axis(axis, xd.len())?;
            if pd.len() != 1 || pd[0] != xd[a] {
                return Err(invalid(format!(
                    "parameter dims {param_dims:?} are neither a scalar, [1], nor 1-D of the length of axis {a} \
                     of x dims {x_dims:?} ({})",
                    xd[a]
                )));
            }
            return Ok(ParamLayout::PerAxis(AxisSplit::of(&xd, a)));
        }
        let a = normalize_axis(axis, xd.len())?;
        let b = usize::try_from(block_size).map_err(|_| invalid("block_size too large"))?;
        let blocks = xd[a].div_ceil(b);
        let fits = pd.len() == xd.len()
            && pd
                .iter()
                .zip(&xd)
                .enumerate()
                .all(|(d, (p, x))| if d == a { *p == blocks } else { p == x });
        if !fits {
            return Err(invalid(format!(
                "blocked parameter dims {param_dims:?} do not fit x dims {x_dims:?} with block_size {b} on \
                 axis {a}: expected the same rank, {blocks} along axis {a} and x's dims elsewhere"
            )));
        }
        Ok(ParamLayout::Blocked {
            split: AxisSplit::of(&xd, a),
            block: b,
            blocks,
        })
    }

    /// Number of parameter values the layout reads (for a length check of the parameter's data).
    pub fn param_numel(&self) -> usize {
        match self {
            ParamLayout::PerTensor => 1,
            ParamLayout::PerAxis(s) => s.len,
            ParamLayout::Blocked { split, blocks, .. } => split.outer * blocks * split.inner,
        }
    }

    /// Index into the parameter's values for flat element `i` of `x`.
    pub fn param_index(&self, i: usize) -> usize {
        match self {
            ParamLayout::PerTensor => 0,
            ParamLayout::PerAxis(s) => s.index_of(i),
            ParamLayout::Blocked {
                split,
                block,
                blocks,
            } => {
                let k = i % split.inner;
                let a = (i / split.inner) % split.len;
                let o = i / (split.inner * split.len);
                (o * blocks + a / block) * split.inner + k
            }
        }
    }

    /// The parameter values repeated onto every element of an `x` of `numel` elements.
    pub fn broadcast<T: Copy>(&self, params: &[T], numel: usize) -> Result<Vec<T>> {
        if params.len() != self.param_numel() {
            return Err(invalid(format!(
                "{} parameter values where the layout needs {}",
                params.len(),
                self.param_numel()
            )));
        }
        Ok((0..numel).map(|i| params[self.param_index(i)]).collect())
    }
}

/// Axis tools on tensors: work on the packed bytes, so they keep the dtype and every value bit-exact (types
/// of at least 8 bits; 4- and 2-bit types are refused).
impl Tensor {
    fn axis_err(&self, e: Error) -> Error {
        match e {
            Error::Invalid { msg, .. } => Error::invalid(format!("tensor '{}'", self.name()), msg),
            other => other,
        }
    }

    /// The split at `axis` and the packed bytes, with the split's `inner` counted in bytes.
    fn byte_split(&self, axis: i64) -> Result<(AxisSplit, AxisSplit, Bytes)> {
        let dt = self.dtype();
        let w = match dt.bits() {
            Some(b) if b >= 8 && dt != DataType::STRING => (b / 8) as usize,
            _ => {
                return Err(self.axis_err(invalid(format!(
                    "axis tools need whole-byte elements, not {}",
                    dt.name()
                ))))
            }
        };
        let s = AxisSplit::new(&self.dims, axis).map_err(|e| self.axis_err(e))?;
        if s.numel().checked_mul(w).is_none() {
            return Err(self.axis_err(invalid(format!("dims {:?} overflow", self.dims))));
        }
        let raw = self.raw_bytes()?;
        let bytes = AxisSplit {
            inner: s.inner * w,
            ..s
        };
        bytes.check_len(raw.len()).map_err(|e| self.axis_err(e))?;
        Ok((s, bytes, raw))
    }

    fn with_bytes(&self, dims: Vec<i64>, raw: Vec<u8>) -> Tensor {
        let mut t = Tensor::from_raw(self.name(), self.dtype(), dims, Bytes::from(raw));
        t.name = self.name.clone();
        t.doc_string = self.doc_string.clone();
        t.metadata_props = self.metadata_props.clone();
        t
    }

    /// The sub-tensor at `indices` along `axis` (same dtype, that axis' dim becomes `indices.len()`).
    pub fn take(&self, axis: i64, indices: &[usize]) -> Result<Tensor> {
        let (_, b, raw) = self.byte_split(axis)?;
        let out = b.take(&raw, indices).map_err(|e| self.axis_err(e))?;
        let mut dims = self.dims.clone();
        let a = normalize_axis(axis, dims.len())?;
        dims[a] = indices.len() as i64;
        Ok(self.with_bytes(dims, out))
    }

    /// The sub-tensor at `range` along `axis`.
    pub fn slice_axis(&self, axis: i64, range: Range<usize>) -> Result<Tensor> {
        let (s, _, _) = self.byte_split(axis)?;
        if range.start > range.end || range.end > s.len {
            return Err(self.axis_err(invalid(format!(
                "slice {range:?} out of range for an axis of length {}",
                s.len
            ))));
        }
        self.take(axis, &range.collect::<Vec<_>>())
    }

    /// The same tensor with every element at `indices` along `axis` set to zero (all-zero bytes: +0.0 for
    /// floats, 0 for integers, false for bool).
    pub fn zero_along(&self, axis: i64, indices: &[usize]) -> Result<Tensor> {
        let (_, b, raw) = self.byte_split(axis)?;
        let mut out = raw.to_vec();
        b.fill(&mut out, indices, 0u8)
            .map_err(|e| self.axis_err(e))?;
        Ok(self.with_bytes(self.dims.clone(), out))
    }

    /// One value per index of `axis` (computed in f64 over the values `to_f64_vec` reads).
    pub fn reduce_axis(&self, axis: i64, r: Reduction) -> Result<Vec<f64>> {
        let s = AxisSplit::new(&self.dims, axis).map_err(|e| self.axis_err(e))?;
        s.reduce(&self.to_f64_vec()?, r)
            .map_err(|e| self.axis_err(e))
    }

    /// (rows, cols) of the tensor flattened at `axis` (see `matrix_dims`).
    pub fn matrix_dims(&self, axis: i64) -> Result<(usize, usize)> {
        matrix_dims(&self.dims, axis).map_err(|e| self.axis_err(e))
    }

    /// The values in f64 as a matrix flattened at `axis`.
    pub fn as_matrix(&self, axis: i64) -> Result<Matrix<f64>> {
        let (rows, cols) = self.matrix_dims(axis)?;
        Matrix::new(rows, cols, self.to_f64_vec()?).map_err(|e| self.axis_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // x = [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]], dims [2, 3, 2]
    fn x() -> Vec<f64> {
        (0..12).map(|v| v as f64).collect()
    }

    #[test]
    fn strides_and_splits() {
        assert_eq!(strides(&[2, 3, 4]), [12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
        let s = AxisSplit::new(&[2, 3, 2], -2).unwrap();
        assert_eq!((s.outer, s.len, s.inner), (2, 3, 2));
        assert_eq!(s.index_of(7), 0); // x[1][0][1]
        assert_eq!(s.index_of(5), 2); // x[0][2][1]
        assert!(AxisSplit::new(&[2, 3], 2).is_err());
        assert!(AxisSplit::new(&[2, 3], -3).is_err());
        assert!(AxisSplit::new(&[2, -3], 0).is_err());
    }

    #[test]
    fn take_slice_fill_by_hand() {
        let s = AxisSplit::new(&[2, 3, 2], 1).unwrap();
        assert_eq!(
            s.take(&x(), &[2, 0]).unwrap(),
            [4.0, 5.0, 0.0, 1.0, 10.0, 11.0, 6.0, 7.0]
        );
        assert_eq!(
            s.slice(&x(), 1..3).unwrap(),
            [2.0, 3.0, 4.0, 5.0, 8.0, 9.0, 10.0, 11.0]
        );
        let mut d = x();
        s.fill(&mut d, &[1], -1.0).unwrap();
        assert_eq!(
            d,
            [0.0, 1.0, -1.0, -1.0, 4.0, 5.0, 6.0, 7.0, -1.0, -1.0, 10.0, 11.0]
        );
        assert!(s.take(&x(), &[3]).is_err());
        assert!(s.slice(&x(), 2..4).is_err());
        assert!(s.take(&x()[..11], &[0]).is_err());
        assert!(s.fill(&mut d, &[5], 0.0).is_err());
    }

    #[test]
    fn reductions_by_hand() {
        let s = AxisSplit::new(&[2, 3, 2], 1).unwrap();
        let mut d = x();
        d[3] = -7.0; // x[0][1][1]
                     // index 0: {0, 1, 6, 7}; index 1: {2, -7, 8, 9}; index 2: {4, 5, 10, 11}
        assert_eq!(s.reduce(&d, Reduction::Min).unwrap(), [0.0, -7.0, 4.0]);
        assert_eq!(s.reduce(&d, Reduction::Max).unwrap(), [7.0, 9.0, 11.0]);
        assert_eq!(s.reduce(&d, Reduction::AbsMax).unwrap(), [7.0, 9.0, 11.0]);
        assert_eq!(s.reduce(&d, Reduction::AbsSum).unwrap(), [14.0, 26.0, 30.0]);
        // sqrt(0+1+36+49) = sqrt(86); sqrt(4+49+64+81) = sqrt(198); sqrt(16+25+100+121) = sqrt(262)
        assert_eq!(
            s.reduce(&d, Reduction::L2).unwrap(),
            [86f64.sqrt(), 198f64.sqrt(), 262f64.sqrt()]
        );
        d[0] = f64::NAN;
        let m = s.reduce(&d, Reduction::Min).unwrap();
        assert!(m[0].is_nan() && m[1] == -7.0);
        let e = AxisSplit::new(&[0, 2], 1).unwrap();
        let m = e.reduce(&[], Reduction::Max).unwrap();
        assert!(m.len() == 2 && m.iter().all(|v| v.is_nan()));
        assert_eq!(e.reduce(&[], Reduction::L2).unwrap(), [0.0, 0.0]);
    }

    #[test]
    fn matrix_view() {
        assert_eq!(matrix_dims(&[2, 3, 4], 1).unwrap(), (2, 12));
        assert_eq!(matrix_dims(&[2, 3, 4], 0).unwrap(), (1, 24));
        assert_eq!(matrix_dims(&[2, 3, 4], 3).unwrap(), (24, 1));
        assert_eq!(matrix_dims(&[2, 3, 4], -1).unwrap(), (6, 4));
        assert!(matrix_dims(&[2, 3, 4], 4).is_err());
        let t = Tensor::from_vec("w", vec![2, 3, 2], x()).unwrap();
        let m = t.as_matrix(2).unwrap();
        assert_eq!((m.rows, m.cols), (6, 2));
        assert_eq!(m.row(2), [4.0, 5.0]);
        assert_eq!(m.column(1), [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]);
        let tt = m.transpose();
        assert_eq!((tt.rows, tt.cols), (2, 6));
        assert_eq!(tt.get(1, 2), 5.0);
        assert_eq!(m.rows_iter().count(), 6);
        assert!(Matrix::new(2, 2, vec![1.0; 3]).is_err());
    }

    #[test]
    fn tensor_axis_tools_keep_dtype() {
        let t = Tensor::from_vec("w", vec![2, 3], vec![1i16, -2, 3, -4, 5, -6]).unwrap();
        let c = t.take(1, &[2, 0]).unwrap();
        assert_eq!(c.dims, [2, 2]);
        assert_eq!(c.to_vec::<i16>().unwrap(), [3, 1, -6, -4]);
        let r = t.slice_axis(0, 1..2).unwrap();
        assert_eq!(r.dims, [1, 3]);
        assert_eq!(r.to_vec::<i16>().unwrap(), [-4, 5, -6]);
        let z = t.zero_along(-1, &[1]).unwrap();
        assert_eq!(z.to_vec::<i16>().unwrap(), [1, 0, 3, -4, 0, -6]);
        assert_eq!(z.name(), "w");
        assert_eq!(t.reduce_axis(0, Reduction::AbsSum).unwrap(), [6.0, 15.0]);
        assert_eq!(t.reduce_axis(1, Reduction::Max).unwrap(), [1.0, 5.0, 3.0]);
        let h = Tensor::from_vec("h", vec![2], vec![half::f16::from_f32(0.5); 2]).unwrap();
        assert_eq!(
            h.zero_along(0, &[0])
                .unwrap()
                .to_vec::<half::f16>()
                .unwrap(),
            [half::f16::ZERO, half::f16::from_f32(0.5)]
        );
        let e = t.take(2, &[0]).unwrap_err().to_string();
        assert!(e.contains("'w'") && e.contains("axis 2"), "{e}");
        assert!(t
            .slice_axis(1, 2..4)
            .unwrap_err()
            .to_string()
            .contains("'w'"));
        let i4 = Tensor::from_f64_as("q", DataType::INT4, vec![2], &[1.0, 2.0]).unwrap();
        assert!(i4.take(0, &[0]).is_err());
    }

    /// `param_index` against the definition: multi-index of x through x's strides, the axis coordinate
    /// divided by the block, flat index through the parameter's strides.
    #[test]
    fn blocked_index_matches_multi_index_definition() {
        for (xd, axis, block) in [
            (vec![3usize, 5, 2], 1usize, 2usize),
            (vec![4, 3], 0, 3),
            (vec![2, 3, 7], 2, 4),
            (vec![6], 0, 6),
            (vec![2, 2, 2, 5], 3, 1),
        ] {
            let mut pd = xd.clone();
            pd[axis] = xd[axis].div_ceil(block);
            let xi: Vec<i64> = xd.iter().map(|d| *d as i64).collect();
            let pi: Vec<i64> = pd.iter().map(|d| *d as i64).collect();
            let l = ParamLayout::resolve(&xi, &pi, axis as i64, block as i64).unwrap();
            let (xs, ps) = (strides(&xd), strides(&pd));
            let n: usize = xd.iter().product();
            for i in 0..n {
                let want: usize = (0..xd.len())
                    .map(|d| {
                        let c = (i / xs[d]) % xd[d];
                        (if d == axis { c / block } else { c }) * ps[d]
                    })
                    .sum();
                assert_eq!(
                    l.param_index(i),
                    want,
                    "{xd:?} axis {axis} block {block} i {i}"
                );
            }
            assert_eq!(l.param_numel(), pd.iter().product::<usize>());
        }
    }

    #[test]
    fn param_layouts_follow_the_spec() {
        assert_eq!(
            ParamLayout::resolve(&[4, 4], &[], 1, 0).unwrap(),
            ParamLayout::PerTensor
        );
        assert_eq!(
            ParamLayout::resolve(&[4, 4], &[1], 1, 0).unwrap(),
            ParamLayout::PerTensor
        );
        let p = ParamLayout::resolve(&[2, 3], &[3], 1, 0).unwrap();
        assert_eq!(
            p.broadcast(&[10, 20, 30], 6).unwrap(),
            [10, 20, 30, 10, 20, 30]
        );
        let p = ParamLayout::resolve(&[2, 3], &[2], -2, 0).unwrap();
        assert_eq!(p.broadcast(&[10, 20], 6).unwrap(), [10, 10, 10, 20, 20, 20]);
        // blocked along axis 1 of [2, 5] with block 2: 3 blocks per row, the last one short
        let p = ParamLayout::resolve(&[2, 5], &[2, 3], 1, 2).unwrap();
        assert_eq!(
            p.broadcast(&[1, 2, 3, 4, 5, 6], 10).unwrap(),
            [1, 1, 2, 2, 3, 4, 4, 5, 5, 6]
        );
        // blocked along axis 0 of [4, 2] with block 2
        let p = ParamLayout::resolve(&[4, 2], &[2, 2], 0, 2).unwrap();
        assert_eq!(
            p.broadcast(&[1, 2, 3, 4], 8).unwrap(),
            [1, 2, 1, 2, 3, 4, 3, 4]
        );
        // the issue-7 case: scale [1, 2] for x [4, 4], block 2 on axis 1
        let e = ParamLayout::resolve(&[4, 4], &[1, 2], 1, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[1, 2]") && e.contains("[4, 4]"), "{e}");
        assert!(ParamLayout::resolve(&[4, 4], &[4, 3], 1, 2).is_err());
        assert!(ParamLayout::resolve(&[4, 4], &[2], 1, 2).is_err());
        assert!(ParamLayout::resolve(&[4, 4], &[3], 1, 0).is_err());
        assert!(ParamLayout::resolve(&[4, 4], &[4, 1], 1, 0).is_err());
        assert!(ParamLayout::resolve(&[4, 4], &[4], 2, 0).is_err());
        assert!(ParamLayout::resolve(&[4, 4], &[4, 2], 1, -2).is_err());
        assert!(ParamLayout::resolve(&[4], &[4], 0, 0)
            .unwrap()
            .broadcast(&[1, 2], 4)
            .is_err());
    }
}
