-- Per-device SCEP challenges. The corporate CA ("scep-corp") holds one
-- end entity per laptop with its own enrollment code (EJBCA-style), keyed
-- by the machine's serial number; the PKI team exports the codes into the
-- table below. The policy hands each device its code as the SCEP
-- challengePassword (allow{ challenge = ... }), which overrides the
-- backend's static challenge. The code reaches the device only over its
-- authenticated CURVE channel; it is never logged.
--
-- Renewals go to the CA as PKCSReq with the challenge too (docs/scep.md),
-- so the code is given on every request.

local challenges = {
  ["PF3ABC12"] = "c7f1-29d4-8b0e",
  ["PF3ABC13"] = "0a9e-77c2-f513",
  ["5CG1234XYZ"] = "e410-b6a8-3d97",
}

function enroll(req)
  if req.new_device and req.token == nil then
    return deny("no enrollment token: ask the operator for a bootstrap bundle")
  end
  local serial = req.facts.dmi_product_serial
  if serial == nil then
    return deny("the device reported no serial number (DMI product_serial); run the agent as root so it can read it")
  end
  local code = challenges[serial]
  if code == nil then
    return deny("no SCEP enrollment code is registered for serial " .. serial
                .. "; ask the PKI team to create the end entity and add its code to the policy")
  end
  local host = string.lower(req.facts.hostname or "")
  if host == "" then
    return deny("the device reported no hostname")
  end
  return allow{
    backend = "scep-corp",
    cn = host .. ".corp.example",
    dns = { host .. ".corp.example" },
    validity = fleet.days(365),
    challenge = code,
  }
end
