// A private npm registry for the packaging test: verdaccio on 127.0.0.1 at a
// port the kernel picks, with the configuration file given as argv[2]
// (storage in a temp dir, no uplinks: nothing leaves this machine). Prints
// "registry listening on http://127.0.0.1:PORT/" once it accepts, and runs
// until it is killed (the test kills it by pid).
const { runServer } = require('verdaccio');

runServer(process.argv[2]).then(
  (server) => {
    server.listen(0, '127.0.0.1', () => {
      process.stdout.write(`registry listening on http://127.0.0.1:${server.address().port}/\n`);
    });
  },
  (err) => {
    process.stderr.write(`verdaccio did not start: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  },
);
