/** Hash slots of a Redis Cluster: every key and shard channel lives in one of them. */
export const SLOT_COUNT = 16384;

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

/**
 * The hash slot of a key or shard channel, as Redis Cluster computes it: CRC16 (XMODEM) of the
 * name's UTF-8 bytes modulo 16384, or of its hash tag only (the text between the first `{` and the
 * next `}`, when that is not empty).
 */
export function keySlot(name: string): number {
  let bytes = Buffer.from(name, "utf8");
  const open = bytes.indexOf(0x7b);
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ byte) & 0xff]!;
  return crc % SLOT_COUNT;
}

/**
 * Throws unless `prefix` can stand before Plate's names: with no brace, so the first `{` of every
 * name is its plate's hash tag.
 */
export function checkKeyPrefix(prefix: string): void {
  if (/[{}]/.test(prefix)) throw new Error(`A Redis key prefix may hold no brace ({ or }): ${JSON.stringify(prefix)}`);
}
