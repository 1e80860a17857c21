namespace FastAttn.IO;

/// <summary>Element types a safetensors file may hold. Every one can be read as float32 (integers and booleans converted).</summary>
public enum SafeTensorsDType
{
    /// <summary>IEEE single precision.</summary>
    F32,
    /// <summary>IEEE half precision.</summary>
    F16,
    /// <summary>bfloat16 (the upper half of a float32).</summary>
    BF16,
    /// <summary>IEEE double precision (narrowed to float32).</summary>
    F64,
    /// <summary>Signed 8-bit integer.</summary>
    I8,
    /// <summary>Signed 16-bit integer.</summary>
    I16,
    /// <summary>Signed 32-bit integer.</summary>
    I32,
    /// <summary>Signed 64-bit integer (e.g. <c>embeddings.position_ids</c> of BERT checkpoints).</summary>
    I64,
    /// <summary>Unsigned 8-bit integer.</summary>
    U8,
    /// <summary>Unsigned 16-bit integer.</summary>
    U16,
    /// <summary>Unsigned 32-bit integer.</summary>
    U32,
    /// <summary>Unsigned 64-bit integer.</summary>
    U64,
    /// <summary>Boolean, one byte (0 false, anything else true; read as 0 or 1).</summary>
    BOOL,
    /// <summary>8-bit float with 4 exponent and 3 mantissa bits (OCP "E4M3FN": no infinities, NaN = S.1111.111).</summary>
    F8_E4M3,
    /// <summary>8-bit float with 5 exponent and 2 mantissa bits (the upper byte of a float16).</summary>
    F8_E5M2,
}
