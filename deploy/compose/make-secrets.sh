#!/bin/sh
# Makes the secrets docker-compose.secure.yml mounts: a private CA, a certificate for Kafka and one
# for the registry proxy (signed by it), the SCRAM user's name and password, and the registry's
# basic-auth user. Run once from the repository root; needs openssl. Writes deploy/compose/secrets/.
set -eu
out="${1:-$(dirname "$0")/secrets}"
mkdir -p "$out"
cd "$out"
umask 077

openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=escalation-stream test CA" \
  -keyout ca.key -out ca.pem 2>/dev/null

leaf() {  # name, DNS name
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost\nextendedKeyUsage=serverAuth\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
leaf kafka kafka
leaf registry registry-proxy
cat kafka.key kafka.pem > kafka-keystore.pem  # PEM keystore: key, then certificate chain

printf 'escalation-stream' > kafka-username
openssl rand -hex 16 | tr -d '\n' > kafka-password
registry_password="$(openssl rand -hex 16)"
printf 'escalation-stream:%s' "$registry_password" > registry-user-info
printf 'escalation-stream:%s\n' "$(openssl passwd -apr1 "$registry_password")" > registry-htpasswd
chmod 644 ./*  # read by the containers' own users
echo "secrets written to $(pwd)"
