import xxhash from 'xxhash-wasm'
import type { HashFunction } from './ring.js'

/** xxHash32 (seed 0) of bytes: of a string's UTF-8, the same number as the HashFunction. */
export type RawHashFunction = (bytes: Uint8Array) => number

// xxhash-wasm compiles its module asynchronously. One compilation serves the whole process;
// it starts on first use, never at import time (no top-level await, so require() of this
// ESM build keeps working).
let loading: Promise<HashFunction> | undefined
let loaded: HashFunction | undefined
let loadedRaw: RawHashFunction | undefined

/** Resolves to xxHash32 (seed 0) once the WebAssembly module is ready. */
export function loadHash (): Promise<HashFunction> {
  loading ??= xxhash().then(({ h32, h32Raw }) => {
    loadedRaw = (bytes: Uint8Array) => h32Raw(bytes)
    loaded = (input: string) => h32(input)
    return loaded
  })
  return loading
}

/** xxHash32 if it is already loaded, else undefined. */
export function loadedHash (): HashFunction | undefined {
  return loaded
}

/** xxHash32 of bytes if it is already loaded, else undefined. */
export function loadedRawHash (): RawHashFunction | undefined {
  return loadedRaw
}
