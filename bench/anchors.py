"""Plain-JS anchors several benchmark sections measure beside their own figures: a raw
Worker that echoes postMessage, one message at a time (round trip) and many at once
(throughput); SubtleCrypto's one-shot digest."""

RAW_ECHO_JS = """async (n) => {
    const src = "self.onmessage = (e) => self.postMessage(e.data);";
    const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
    const once = (msg) => new Promise((resolve) => {
        w.onmessage = (e) => resolve(e.data);
        w.postMessage(msg);
    });
    for (let i = 0; i < 200; i++) await once({ x: i });
    const times = [];
    for (let i = 0; i < n; i++) {
        const t = performance.now();
        await once({ x: i });
        times.push(performance.now() - t);
    }
    w.terminate();
    return times;
}"""

RAW_THROUGHPUT_JS = """async (n) => {
    const src = "self.onmessage = (e) => self.postMessage(e.data);";
    const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
    const run = () => new Promise((resolve) => {
        let left = n;
        w.onmessage = () => { if (--left === 0) resolve(); };
        for (let i = 0; i < n; i++) w.postMessage({ x: i });
    });
    await run();
    const t = performance.now();
    await run();
    const ms = performance.now() - t;
    w.terminate();
    return n / (ms / 1000);
}"""

# SubtleCrypto's one-shot digest of mb MB, from a buffer or through a File's arrayBuffer().
SUBTLE_JS = """async ([mb, kind]) => {
    const buf = new Uint8Array(mb * 1024 * 1024);
    for (let i = 0; i < buf.length; i += 4096) buf[i] = i & 255;
    const t = performance.now();
    const data = kind === "file" ? await new File([buf], "x.bin").arrayBuffer() : buf;
    await crypto.subtle.digest("SHA-256", data);
    return performance.now() - t;
}"""
