import xxhash from 'xxhash-wasm'
import type { HashFunction } from './ring.js'

// xxhash-wasm compiles its module asynchronously. One compilation serves the whole process;
// it starts on first use, never at import time (no top-level await, so require() of this
// ESM build keeps working).
let loading: Promise<HashFunction> | undefined
let loaded: HashFunction | undefined

/** Resolves to xxHash32 (seed 0) once the WebAssembly module is ready. */
export function loadHash (): Promise<HashFunction> {
  loading ??= xxhash().then(({ h32 }) => {
    loaded = (input: string) => h32(input)
    return loaded
  })
  return loading
}

/** xxHash32 if it is already loaded, else undefined. */
export function loadedHash (): HashFunction | undefined {
  return loaded
}
