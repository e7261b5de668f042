// Generates the local cluster's PKI with the openssl CLI (Node has no X.509 issuing API): a CA, the
// API server's serving certificate for loopback, an admin client certificate and the service-account
// signing key. ECDSA P-256 keys keep generation fast.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface Pki {
  caCert: string;
  caKey: string;
  apiserverCert: string;
  apiserverKey: string;
  adminCert: string;
  adminKey: string;
  serviceAccountKey: string;
  serviceAccountPub: string;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error("the 'openssl' command is needed to generate the cluster certificates: apt-get install openssl");
    }
    throw new Error(`openssl ${args[0]} failed: ${stderr.trim() || (err as Error).message}`);
  }
}

function issue(dir: string, name: string, subject: string, extensions: string[]): void {
  fs.writeFileSync(path.join(dir, `${name}.ext`), extensions.join('\n') + '\n');
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`], dir);
  openssl(['req', '-new', '-key', `${name}.key`, '-subj', subject, '-out', `${name}.csr`], dir);
  openssl(
    ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
      '-days', '3650', '-sha256', '-extfile', `${name}.ext`, '-out', `${name}.crt`],
    dir,
  );
}

/** `podGateway`: the cluster's pod network gateway, where pods reach the API server. */
/** `addresses`: the IPs the API server is reached at besides loopback (pod network gateway, bind address, `kubernetes` Service IP). */
export function generatePki(dir: string, addresses: string[]): Pki {
  fs.mkdirSync(dir, { recursive: true });
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key'], dir);
  openssl(
    ['req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=npuserve-local-cluster-ca', '-days', '3650', '-sha256',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
      '-out', 'ca.crt'],
    dir,
  );
  issue(dir, 'apiserver', '/CN=kube-apiserver', [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    // Pods reach the API server at the `kubernetes` Service's cluster IP, which kube-proxy translates.
    `subjectAltName=${[...new Set(['127.0.0.1', ...addresses])].map((a) => `IP:${a}`).join(',')},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc`,
  ]);
  issue(dir, 'admin', '/O=system:masters/CN=kubernetes-admin', [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=clientAuth',
  ]);
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'sa.key'], dir);
  openssl(['ec', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], dir);
  const p = (f: string) => path.join(dir, f);
  return {
    caCert: p('ca.crt'),
    caKey: p('ca.key'),
    apiserverCert: p('apiserver.crt'),
    apiserverKey: p('apiserver.key'),
    adminCert: p('admin.crt'),
    adminKey: p('admin.key'),
    serviceAccountKey: p('sa.key'),
    serviceAccountPub: p('sa.pub'),
  };
}

/** A kubeconfig (JSON, which kubectl reads like YAML) with the certificates inline. */
export function writeKubeconfig(file: string, server: string, pki: Pki): void {
  const b64 = (f: string) => fs.readFileSync(f).toString('base64');
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'npuserve-local', cluster: { server, 'certificate-authority-data': b64(pki.caCert) } }],
    users: [{ name: 'admin', user: { 'client-certificate-data': b64(pki.adminCert), 'client-key-data': b64(pki.adminKey) } }],
    contexts: [{ name: 'npuserve-local', context: { cluster: 'npuserve-local', user: 'admin', namespace: 'default' } }],
    'current-context': 'npuserve-local',
  };
  fs.writeFileSync(file, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
}
