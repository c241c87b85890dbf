#!/usr/bin/env python3
# Independent cross-check of the session extras vectors (extras-*.json),
# written from docs/protocol.md section 3 alone with pyca/cryptography, not
# from the Go code. Run by hand: python3 session/testdata/extras-crosscheck.py
# (needs the `cryptography` package; not part of `go test`).
import json, hashlib, hmac, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
import os
T=os.path.dirname(os.path.abspath(__file__))+'/'
def det(seed, n):
    out=b''; i=0
    while len(out)<n:
        out+=hashlib.sha256(b'ferry extras\x00'+seed.encode()+struct.pack('>Q',i)).digest(); i+=1
    return out[:n]
def hkdf(ikm, salt, info, n):
    return HKDF(hashes.SHA256(), n, salt if salt else None, info.encode()).derive(ikm)
raw=lambda k: k.public_bytes(Encoding.Raw, PublicFormat.Raw)
# attachments
a=json.load(open(T+'extras-attachment.json'))
for c in a['cases']:
    key=bytes.fromhex(c['key']); nonce=bytes.fromhex(c['nonce'])
    assert det(c['rand_seed'],48)==key+nonce
    okm=hkdf(key,nonce,'Ferry attachment v1 payload',64); pk,commit=okm[:32],okm[32:]
    assert pk.hex()==c['payload_key'] and commit.hex()==c['commitment']
    pt=det(c['plaintext_seed'],c['plaintext_len'])
    chunks=[pt[i:i+65536] for i in range(0,len(pt),65536)] or [b'']
    blob=nonce+commit
    for i,ch in enumerate(chunks):
        n=b'\0\0\0'+struct.pack('>Q',i)+(b'\x01' if i==len(chunks)-1 else b'\x00')
        blob+=AESGCM(pk).encrypt(n,ch,None)
    assert len(blob)==c['blob_len'] and hashlib.sha256(blob).hexdigest()==c['blob_sha256'], c['name']
    if c.get('blob'): assert blob.hex()==c['blob']
    ptr=b'\x01'+key+hashlib.sha256(blob).digest()+struct.pack('>QI',len(pt),65536)
    assert ptr.hex()==c['pointer']
print('attachment ok', len(a['cases']))
# sealed
def ident(seed):
    s=det(seed,32); ed=Ed25519PrivateKey.from_private_bytes(s)
    x=X25519PrivateKey.from_private_bytes(hashlib.sha512(s).digest()[:32])
    return raw(ed.public_key()), x
v=json.load(open(T+'extras-sealed.json'))
for c in v['cases']:
    ipk_s, xs=ident(c['sender_seed']); ipk_r, xr=ident(c['recipient_seed'])
    assert ipk_s.hex()==c['sender_identity'] and ipk_r.hex()==c['recipient_identity']
    e=X25519PrivateKey.from_private_bytes(det(c['ephemeral_seed'],32)); E=raw(e.public_key())
    hdr=b'\x01'+ipk_r+E
    okm=hkdf(e.exchange(xr.public_key()),hdr,'Ferry sealed sender v1 ephemeral',64); ck,k1=okm[:32],okm[32:]
    S=AESGCM(k1).encrypt(b'\0'*12,ipk_s,hdr)
    k2=hkdf(xs.exchange(xr.public_key()),ck+S,'Ferry sealed sender v1 static',32)
    msg=bytes([c['content_type']])+bytes.fromhex(c['inner'])
    need=len(msg)+1; b=256
    while b<need and b<65536: b*=2
    if need>65536: b=-(-need//65536)*65536
    padded=msg+b'\x80'+b'\0'*(b-len(msg)-1)
    C=AESGCM(k2).encrypt(b'\0'*12,padded,hdr+ipk_s)
    assert (b'\x01'+E+S+C).hex()==c['envelope'], c['ephemeral_seed']
print('sealed ok', len(v['cases']))
# group
g=json.load(open(T+'extras-group.json'))
d=bytes.fromhex(g['alice_distribution'])
gid,keyid,epoch,it,ck,sig=d[1:17],d[17:21],d[21:25],struct.unpack('>I',d[25:29])[0],d[29:61],d[61:93]
assert gid.hex()==g['group_id']
kr=det(g['alice_sender_key_seed'],68); assert kr[:4]==keyid and kr[4:36]==ck
assert raw(Ed25519PrivateKey.from_private_bytes(kr[36:68]).public_key())==sig
for i,(m,p) in enumerate(zip(g['messages'],g['plaintexts'])):
    m=bytes.fromhex(m)
    seed=hmac.new(ck,b'\x01',hashlib.sha256).digest(); ck=hmac.new(ck,b'\x02',hashlib.sha256).digest()
    mk=hkdf(seed,None,'Ferry group message v1',32)
    hdr=b'\x01'+gid+epoch+keyid+struct.pack('>I',it+i)
    assert m[:29]==hdr
    Ed25519PublicKey.from_public_bytes(sig).verify(m[-64:],m[:-64])
    assert AESGCM(mk).decrypt(b'\0'*12,m[29:-64],hdr).hex()==p
print('group ok', len(g['messages']))
# safety numbers
s=json.load(open(T+'extras-safety-number.json'))
def fp(k,i):
    h=hashlib.sha512(b'\0\0'+k+i+k).digest()
    for _ in range(5199): h=hashlib.sha512(h+k).digest()
    return h
for c in s['cases']:
    lk,rk=bytes.fromhex(c['local_signal_key']),bytes.fromhex(c['remote_signal_key'])
    _,xl=ident(c['local_seed']); assert lk==b'\x05'+raw(xl.public_key())
    l,r=fp(lk,c['local_id'].encode()),fp(rk,c['remote_id'].encode())
    dig=lambda h:''.join('%05d'%(int.from_bytes(h[i:i+5],'big')%100000) for i in range(0,30,5))
    assert ''.join(sorted([dig(l),dig(r)]))==c['displayable']
    assert (bytes([8,2,0x12,0x22,0x0a,0x20])+l[:32]+bytes([0x1a,0x22,0x0a,0x20])+r[:32]).hex()==c['scannable']
print('safety ok', len(s['cases']))
