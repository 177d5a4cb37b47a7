"""A small NumPy interpreter of the Core ML ML Program ops that mlxvision's exporter produces.

Tests only: Core ML itself runs only on macOS, so on Linux the saved ``.mlpackage`` is read
back (its protobuf spec and weight blob) and evaluated here, op by op, with NumPy semantics
written from the MIL op documentation. Unknown ops raise, so the test fails loudly when the
exporter starts emitting something new.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

_FP = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64}


def _dtype_name(proto_dtype: int) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(proto_dtype)


def _np_dtype(proto_dtype: int) -> Any:
    name = _dtype_name(proto_dtype)
    table = {
        **_FP,
        "INT32": np.int32,
        "INT64": np.int64,
        "BOOL": np.bool_,
        "STRING": object,
        "UINT8": np.uint8,
        "INT8": np.int8,
    }
    return table[name]


class MILInterpreter:
    """Evaluate the ``main`` function of an ``.mlpackage`` with NumPy."""

    def __init__(self, package: str | Path) -> None:
        import coremltools as ct

        self.package = Path(package)
        self.spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
        function = self.spec.mlProgram.functions["main"]
        self.block = function.block_specializations[function.opset]
        self.input_names = [i.name for i in function.inputs]
        self._blob: Any = None

    def op_types(self) -> list[str]:
        return [op.type for op in self.block.operations]

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        missing = sorted(set(self.input_names) - set(inputs))
        unexpected = sorted(set(inputs) - set(self.input_names))
        assert not missing and not unexpected, (
            f"{self.package.name}: inputs {self.input_names}; missing {missing}, "
            f"unexpected {unexpected}"
        )
        env: dict[str, Any] = {name: np.asarray(inputs[name]) for name in self.input_names}
        for op in self.block.operations:
            if op.type == "const":
                env[op.outputs[0].name] = self._value(op.attributes["val"])
                continue
            args = {}
            for key, arg in op.inputs.items():
                items = [env[b.name] if b.name else self._value(b.value) for b in arg.arguments]
                args[key] = items if key == "values" else items[0]
            if op.type == "classify":
                probabilities = np.asarray(args["probabilities"])
                labels = list(args["classes"])
                env[op.outputs[0].name] = [labels[i] for i in probabilities.argmax(axis=-1)]
                env[op.outputs[1].name] = probabilities
                continue
            handler = getattr(self, "_op_" + op.type, None)
            if handler is None:
                raise NotImplementedError(f"MIL interpreter: op {op.type!r} not implemented")
            env[op.outputs[0].name] = handler(**args)
        return {name: env[name] for name in self.block.outputs}

    # -- constants ---------------------------------------------------------------------------
    def _value(self, value: Any) -> Any:
        if value.type.WhichOneof("type") == "listType":
            return [self._value(item) for item in value.immediateValue.list.values]
        tensor_type = value.type.tensorType
        dtype = _np_dtype(tensor_type.dataType)
        shape = [d.constant.size for d in tensor_type.dimensions]
        if value.WhichOneof("value") == "blobFileValue":
            return self._read_blob(value.blobFileValue.offset, dtype).reshape(shape)
        tv = value.immediateValue.tensor
        kind = tv.WhichOneof("value")
        if kind == "bytes":
            data = np.frombuffer(tv.bytes.values, dtype=dtype)
        else:
            data = np.array(list(getattr(tv, kind).values), dtype=dtype)
        if dtype is object:
            return data.reshape(shape)[()] if not shape else data.reshape(shape)
        return data.reshape(shape)

    def _read_blob(self, offset: int, dtype: Any) -> np.ndarray:
        from coremltools.libmilstoragepython import _BlobStorageReader

        if self._blob is None:
            weights = self.package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
            self._blob = _BlobStorageReader(str(weights))
        if dtype == np.float32:
            return np.asarray(self._blob.read_float_data(offset), np.float32)
        if dtype == np.float16:
            raw = np.asarray(self._blob.read_fp16_data(offset))
            return raw.view(np.float16) if raw.dtype == np.uint16 else raw.astype(np.float16)
        raise NotImplementedError(f"MIL interpreter: blob of {dtype}")

    # -- elementwise ----------------------------------------------------------------------
    @staticmethod
    def _binary(fn: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dtype = np.result_type(np.asarray(x).dtype, np.asarray(y).dtype)
        return np.asarray(fn(x, y)).astype(dtype)

    def _op_add(self, x, y):
        return self._binary(np.add, x, y)

    def _op_sub(self, x, y):
        return self._binary(np.subtract, x, y)

    def _op_mul(self, x, y):
        return self._binary(np.multiply, x, y)

    def _op_real_div(self, x, y):
        return self._binary(np.divide, x, y)

    def _op_maximum(self, x, y):
        return self._binary(np.maximum, x, y)

    def _op_minimum(self, x, y):
        return self._binary(np.minimum, x, y)

    def _op_pow(self, x, y):
        return self._binary(np.power, x, y)

    def _op_relu(self, x):
        return np.maximum(x, 0).astype(x.dtype)

    def _op_sigmoid(self, x):
        return (1 / (1 + np.exp(-x))).astype(x.dtype)

    def _op_silu(self, x):
        return (x / (1 + np.exp(-x))).astype(x.dtype)

    def _op_tanh(self, x):
        return np.tanh(x)

    def _op_erf(self, x):
        return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)

    def _op_exp(self, x):
        return np.exp(x)

    def _op_log(self, x, epsilon=0.0):
        return np.log(x + epsilon).astype(x.dtype)

    def _op_sqrt(self, x):
        return np.sqrt(x)

    def _op_rsqrt(self, x, epsilon=1e-12):
        return (1 / np.sqrt(x + epsilon)).astype(x.dtype)

    def _op_square(self, x):
        return np.square(x)

    def _op_abs(self, x):
        return np.abs(x)

    def _op_identity(self, x):
        return x

    def _op_clip(self, x, alpha, beta):
        return np.clip(x, alpha, beta).astype(x.dtype)

    def _op_gelu(self, x, mode="EXACT"):
        xd = x.astype(np.float64)
        if mode == "EXACT":
            out = 0.5 * xd * (1 + np.vectorize(math.erf)(xd / math.sqrt(2)))
        elif mode == "TANH_APPROXIMATION":
            out = 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)))
        else:
            out = xd / (1 + np.exp(-1.702 * xd))
        return out.astype(x.dtype)

    def _op_cast(self, x, dtype):
        table = {"fp32": np.float32, "fp16": np.float16, "int32": np.int32, "bool": np.bool_}
        return np.asarray(x).astype(table[str(dtype)])

    # -- reductions and normalization ----------------------------------------------------------
    def _reduce(self, fn, x, axes=None, keep_dims=False):
        axes = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        return np.asarray(fn(x, axis=axes, keepdims=bool(keep_dims))).astype(x.dtype)

    def _op_reduce_sum(self, x, axes=None, keep_dims=False):
        return self._reduce(np.sum, x, axes, keep_dims)

    def _op_reduce_mean(self, x, axes=None, keep_dims=False):
        return self._reduce(np.mean, x, axes, keep_dims)

    def _op_reduce_max(self, x, axes=None, keep_dims=False):
        return self._reduce(np.max, x, axes, keep_dims)

    def _op_reduce_min(self, x, axes=None, keep_dims=False):
        return self._reduce(np.min, x, axes, keep_dims)

    def _op_reduce_prod(self, x, axes=None, keep_dims=False):
        return self._reduce(np.prod, x, axes, keep_dims)

    def _op_reduce_log_sum_exp(self, x, axes=None, keep_dims=False):
        def lse(v, axis, keepdims):
            top = np.max(v, axis=axis, keepdims=True)
            out = np.log(np.sum(np.exp(v - top), axis=axis, keepdims=True)) + top
            return out if keepdims else np.squeeze(out, axis=axis)

        return self._reduce(lse, x, axes, keep_dims)

    def _op_softmax(self, x, axis=-1):
        e = np.exp(x - x.max(axis=int(axis), keepdims=True))
        return (e / e.sum(axis=int(axis), keepdims=True)).astype(x.dtype)

    def _op_layer_norm(self, x, axes, gamma=None, beta=None, epsilon=1e-5):
        axes = tuple(int(a) for a in np.atleast_1d(axes))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        out = (x - mean) / np.sqrt(var + epsilon)
        if gamma is not None:
            out = out * gamma
        if beta is not None:
            out = out + beta
        return out.astype(x.dtype)

    def _op_batch_norm(self, x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        out = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + epsilon)
        if gamma is not None:
            out = out * gamma.reshape(shape)
        if beta is not None:
            out = out + beta.reshape(shape)
        return out.astype(x.dtype)

    # -- linear algebra, convolution, pooling ---------------------------------------------
    def _op_matmul(self, x, y, transpose_x=False, transpose_y=False):
        if transpose_x:
            x = np.swapaxes(x, -1, -2)
        if transpose_y:
            y = np.swapaxes(y, -1, -2)
        return np.matmul(x, y)

    def _op_linear(self, x, weight, bias=None):
        out = x @ weight.T
        return out + bias if bias is not None else out

    @staticmethod
    def _custom_pads(x_spatial, kernel, strides, dilations, pad_type, pad):
        pad_type = str(pad_type)
        n = len(kernel)
        if pad_type == "custom":
            return [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(n)]
        if pad_type == "valid":
            return [(0, 0)] * n
        pads = []
        for size, k, s, d in zip(x_spatial, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        return pads

    def _op_conv(
        self,
        x,
        weight,
        strides=None,
        pad_type="valid",
        pad=None,
        dilations=None,
        groups=1,
        bias=None,
    ):
        n = weight.ndim - 2
        strides = [1] * n if strides is None else [int(s) for s in strides]
        dilations = [1] * n if dilations is None else [int(d) for d in dilations]
        pads = self._custom_pads(x.shape[2:], weight.shape[2:], strides, dilations, pad_type, pad)
        xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *pads])
        kernel = weight.shape[2:]
        out_sizes = [
            (xp.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
            for i in range(n)
        ]
        groups = int(groups)
        cout, cin_g = weight.shape[0], weight.shape[1]
        cout_g = cout // groups
        batch = x.shape[0]
        out = np.zeros((batch, groups, cout_g, *out_sizes))
        grouped = weight.astype(np.float64).reshape(groups, cout_g, cin_g, *kernel)
        for offset in np.ndindex(*kernel):
            index = tuple(
                slice(
                    offset[i] * dilations[i],
                    offset[i] * dilations[i] + strides[i] * (out_sizes[i] - 1) + 1,
                    strides[i],
                )
                for i in range(n)
            )
            patch = xp[(slice(None), slice(None), *index)]
            patch = patch.reshape(batch, groups, cin_g, *out_sizes)
            w = grouped[(slice(None), slice(None), slice(None), *offset)]
            out += np.einsum("ngc...,goc->ngo...", patch, w, optimize=True)
        out = out.reshape(batch, cout, *out_sizes)
        if bias is not None:
            out += bias.reshape(1, -1, *[1] * n)
        return out.astype(x.dtype)

    def _pool(self, x, kernel_sizes, strides, pad_type, pad, ceil_mode, kind, exclude=False):
        kernel = [int(k) for k in kernel_sizes]
        strides = [int(s) for s in strides]
        n = len(kernel)
        if bool(ceil_mode):
            raise NotImplementedError("MIL interpreter: ceil_mode pooling")
        pads = self._custom_pads(x.shape[2:], kernel, strides, [1] * n, pad_type, pad)
        fill = -np.inf if kind == "max" else 0.0
        xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *pads], constant_values=fill)
        ones = np.pad(np.ones(x.shape[2:]), pads)
        out_sizes = [(xp.shape[2 + i] - kernel[i]) // strides[i] + 1 for i in range(n)]
        windows, counts = [], []
        for offset in np.ndindex(*kernel):
            index = tuple(
                slice(offset[i], offset[i] + strides[i] * (out_sizes[i] - 1) + 1, strides[i])
                for i in range(n)
            )
            windows.append(xp[(slice(None), slice(None), *index)])
            counts.append(ones[index])
        stack = np.stack(windows)
        if kind == "max":
            out = stack.max(axis=0)
        elif exclude:
            out = stack.sum(axis=0) / np.stack(counts).sum(axis=0)
        else:
            out = stack.mean(axis=0)
        return out.astype(x.dtype)

    def _op_max_pool(self, x, kernel_sizes, strides, pad_type, pad=None, ceil_mode=False):
        return self._pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, "max")

    def _op_avg_pool(
        self,
        x,
        kernel_sizes,
        strides,
        pad_type,
        pad=None,
        ceil_mode=False,
        exclude_padding_from_average=False,
    ):
        return self._pool(
            x,
            kernel_sizes,
            strides,
            pad_type,
            pad,
            ceil_mode,
            "avg",
            bool(exclude_padding_from_average),
        )

    def _op_upsample_nearest_neighbor(self, x, scale_factor_height=1, scale_factor_width=1):
        sh, sw = int(scale_factor_height), int(scale_factor_width)
        if (sh, sw) != (scale_factor_height, scale_factor_width):
            raise NotImplementedError("MIL interpreter: fractional upsampling")
        return np.repeat(np.repeat(x, sh, axis=2), sw, axis=3)

    # -- shapes ---------------------------------------------------------------------------
    def _op_reshape(self, x, shape):
        shape = [int(s) for s in shape]
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)

    def _op_transpose(self, x, perm):
        return x.transpose([int(p) for p in perm])

    def _op_concat(self, values, axis, interleave=False):
        if bool(interleave):
            raise NotImplementedError("MIL interpreter: interleaved concat")
        return np.concatenate(values, axis=int(axis))

    def _op_slice_by_index(
        self, x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None
    ):
        rank = x.ndim
        stride = [1] * rank if stride is None else [int(s) for s in stride]
        begin_mask = [False] * rank if begin_mask is None else list(begin_mask)
        end_mask = [False] * rank if end_mask is None else list(end_mask)
        index = tuple(
            slice(
                None if begin_mask[i] else int(begin[i]),
                None if end_mask[i] else int(end[i]),
                stride[i],
            )
            for i in range(rank)
        )
        out = x[index]
        if squeeze_mask is not None and any(squeeze_mask):
            out = np.squeeze(out, axis=tuple(i for i, s in enumerate(squeeze_mask) if s))
        return out

    def _op_pad(self, x, pad, mode="constant", constant_val=0.0):
        if str(mode) != "constant":
            raise NotImplementedError(f"MIL interpreter: pad mode {mode}")
        pad = [int(p) for p in pad]
        pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]
        pairs = [(0, 0)] * (x.ndim - len(pairs)) + pairs
        return np.pad(x, pairs, constant_values=constant_val).astype(x.dtype)

    def _op_tile(self, x, reps):
        return np.tile(x, [int(r) for r in reps])

    def _op_shape(self, x):
        return np.array(x.shape, np.int32)

    def _op_fill(self, shape, value=0.0):
        return np.full([int(s) for s in shape], value, dtype=np.asarray(value).dtype)

    def _op_expand_dims(self, x, axes):
        return np.expand_dims(x, tuple(int(a) for a in axes))

    def _op_squeeze(self, x, axes=None):
        return np.squeeze(x, None if axes is None else tuple(int(a) for a in axes))
