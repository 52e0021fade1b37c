// `npm install` in a checkout: build the native addon with cargo and compile
// the TypeScript. The published manifest has no scripts at all (scripts/
// release.mjs drops them), so users of the package never run this nor need
// Rust; the Cargo.toml check covers a tarball packed straight from a checkout.
const { existsSync } = require('node:fs');
const { execSync } = require('node:child_process');
const { join } = require('node:path');

const root = join(__dirname, '..');
if (!existsSync(join(root, 'Cargo.toml'))) process.exit(0);
try {
  execSync('cargo --version', { stdio: 'ignore' });
} catch {
  console.error('famez: building from a checkout needs Rust (cargo): install it from https://rustup.rs and rerun npm install');
  process.exit(1);
}
execSync('npm run build', { cwd: root, stdio: 'inherit' });
