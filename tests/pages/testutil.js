// Plain-JS helpers the tests use as independent oracles (SubtleCrypto) and data sources.
window.testUtil = {
  randomBuffer(n) {
    const u8 = new Uint8Array(n);
    for (let i = 0; i < n; i += 65536) crypto.getRandomValues(u8.subarray(i, Math.min(n, i + 65536)));
    return u8.buffer;
  },
  hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  },
  async subtleHex(algorithm, buffer) {
    return window.testUtil.hex(await crypto.subtle.digest(algorithm, buffer));
  },
  file(buffer, name) {
    return new File([buffer], name);
  },
};
