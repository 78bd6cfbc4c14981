// An HTTP/2 client as an agent: `node h2_agent.mjs tls|cleartext`. It sends an unsigned STS
// GetCallerIdentity (the gateway signs every call itself) over node's built-in http2 module:
// with TLS and ALPN "h2", or as cleartext h2 with the preface and no ALPN at all. Prints
// {"protocol", "status", "body"} as JSON.
import http2 from 'node:http2';

const mode = process.argv[2] ?? 'tls';
const origin = mode === 'tls' ? 'https://sts.amazonaws.com' : 'http://sts.amazonaws.com:443';
const session = http2.connect(origin);
session.on('error', (err) => {
  console.log(JSON.stringify({ error: String(err) }));
  process.exit(1);
});
const body = 'Action=GetCallerIdentity&Version=2011-06-15';
const request = session.request({
  ':method': 'POST',
  ':path': '/',
  'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
  'content-length': String(Buffer.byteLength(body)),
});
let status = 0;
let text = '';
request.on('response', (headers) => { status = headers[':status']; });
request.setEncoding('utf8');
request.on('data', (chunk) => { text += chunk; });
request.on('end', () => {
  console.log(JSON.stringify({ protocol: session.alpnProtocol ?? 'h2c', status, body: text }));
  session.close();
});
request.end(body);
