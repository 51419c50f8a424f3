#!/bin/sh
curl --fail -sk --max-time 1 https://192.0.2.100:6443/readyz -o /dev/null
